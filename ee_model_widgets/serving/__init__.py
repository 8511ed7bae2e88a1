"""Wire formats, the REST predictor client, `model prepare` and the local predict server."""
