"""Where steps run: KFP glue, the local pipeline runner, the training job launcher, GitOps.

Depends on the steps and below; the CLI is the only layer above it.
"""
