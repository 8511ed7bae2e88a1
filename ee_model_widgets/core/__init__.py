"""The predictor core: projections, images, tiling, models, predictions, visualisation.

Nothing here imports ipywidgets, ipyleaflet or the web stack: the widgets, the server and
the CLI all sit on top of this package.
"""
