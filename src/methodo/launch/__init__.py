"""Starting methodo on many processes and machines: torchrun (:mod:`methodo.launch.torchrun`) and Slurm
job scripts (:mod:`methodo.launch.slurm`). No process management of our own: torchrun's elastic agent
starts, watches and restarts the workers; Slurm's ``srun`` starts one agent per node."""
