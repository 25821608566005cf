"""bgeflow's KFP components: one module per pipeline step, each with its compiled YAML beside it.

Every component is a lightweight Python component whose body imports ``bgeflow`` and calls the
step's library function, the same code the CLI verb runs, in the bgeflow image (nothing is
installed at run time). Modules here import only the standard library and kfp.
"""

from typing import Any

_EXECUTOR = "_KFP_RUNTIME=true python3 -m kfp.dsl.executor_main"


def exec_executor(component: Any) -> Any:
    """``component`` with its Python executor ``exec``'d by the shell of KFP's command.

    kfp compiles a lightweight component to ``sh -ec '...; _KFP_RUNTIME=true python3 -m
    kfp.dsl.executor_main ...'``. Under the images' ``/bin/sh`` (dash) python3 is then a child of
    ``sh``, and a SIGTERM that reaches only ``sh`` (KFP terminating the run) never reaches the
    step: the train launcher would keep polling and leave its job running instead of deleting it.

    Raises:
        RuntimeError: kfp changed the command's shape, so the rewrite would silently not apply.
    """
    command = component.component_spec.implementation.container.command
    if command[:2] != ["sh", "-ec"] or command[2].count(_EXECUTOR) != 1:
        raise RuntimeError(f"{component.name}: kfp's lightweight command changed shape ({command[:2]}); "
                           f"cannot exec its executor ({_EXECUTOR!r})")
    command[2] = command[2].replace(_EXECUTOR, _EXECUTOR.replace("python3", "exec python3"))
    return component
