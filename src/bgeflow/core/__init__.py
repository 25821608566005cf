"""Core: what every layer above uses and nothing here knows of the pipeline's steps.

Storage (local paths and object stores), logging, YAML config files, model references and the
error types. Imports only the standard library and light dependencies (boto3, pyyaml, pydantic).
"""
