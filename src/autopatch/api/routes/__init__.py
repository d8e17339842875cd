"""One router per area of the API: instances, exposure, catalog, runs, tokens and audit."""
