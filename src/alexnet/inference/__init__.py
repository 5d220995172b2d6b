"""Using a trained model: evaluate it, predict with it, serve it over HTTP."""
