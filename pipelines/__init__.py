"""KFP pipeline definitions; compiled YAML beside each module (``make pipelines``)."""
