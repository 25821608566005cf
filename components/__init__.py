"""bgeflow's KFP components: one module per pipeline step, each with its compiled YAML beside it.

Every component is a lightweight Python component whose body imports ``bgeflow`` and calls the
step's library function, the same code the CLI verb runs, in the bgeflow image (nothing is
installed at run time). Modules here import only the standard library and kfp.
"""
