export * from './tile_layer';
