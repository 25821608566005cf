"""Retrieval: turning texts into vectors and searching them (the encoder and faiss search).

Shared by mining, evaluation and teacher scoring; depends on ``bgeflow.core`` and torch/faiss.
"""
