"""`bridge serve --workers N`: a small supervisor over N worker processes sharing the listening ports."""
