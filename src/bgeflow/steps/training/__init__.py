"""Fine-tuning with FlagEmbedding under torchrun, one PyTorchJob pod at a time (or all of them here).

``bgeflow train retriever|reranker`` and the KFP components call ``train(TrainConfig(...))``.
"""

from bgeflow.steps.training.config import TrainConfig
from bgeflow.steps.training.pod import TrainResult, pod_command, train

__all__ = ["TrainConfig", "TrainResult", "pod_command", "train"]
