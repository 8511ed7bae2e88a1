// The module name and version the Python side names in `_view_module(_version)`.
// Keep in step with package.json (the widget manager matches `^0.1.0` against it).
export const MODULE_NAME = 'ee-model-widgets';
export const MODULE_VERSION = '0.1.0';
