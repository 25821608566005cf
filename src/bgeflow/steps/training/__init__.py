"""Fine-tuning with FlagEmbedding under torchrun, one PyTorchJob pod at a time (or all of them here).

``bgeflow train``, the launcher's pods and ``bgeflow run`` all call ``train(TrainSpec(...))``.
"""

from bgeflow.steps.training.pod import TrainResult, pod_command, train, write_spec
from bgeflow.steps.training.spec import DistributedSettings, TrainSpec

__all__ = ["DistributedSettings", "TrainResult", "TrainSpec", "pod_command", "train", "write_spec"]
