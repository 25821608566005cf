# Pinned versions of everything the local cluster builds from Go modules (sourced, not run).
# One Kubernetes release; the staging modules (k8s.io/api, client-go, ...) are pinned to the
# matching v0.<minor>.<patch> by build.sh.
KUBERNETES_VERSION=v1.35.4
# Kubeflow Training Operator 1.9 (PyTorchJob kubeflow.org/v1).
TRAINING_OPERATOR_VERSION=v1.9.3
# Kubeflow Trainer v2 (TrainJob trainer.kubeflow.org/v1alpha1) and the JobSet it drives.
TRAINER_VERSION=v2.1.0
JOBSET_VERSION=v0.10.1
COREDNS_VERSION=v1.12.4
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
