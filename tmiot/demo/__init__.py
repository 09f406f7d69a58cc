"""`tmiot demo`: the pipeline end to end with a live view, a summary and pictures."""
