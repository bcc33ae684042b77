"""``methodo slurm CONFIG --nodes N --gpus-per-node G ...``: an sbatch script that runs ``methodo run`` with DDP
on a Slurm cluster.

The script follows what HPC centres document (IDRIS's Jean Zay pages on multi-GPU and multi-node jobs):

- ``srun`` starts **one task per node**, and that task runs torchrun, which starts one process per GPU
  (``--nproc-per-node``) and restarts them on failure (``--max-restarts``); the torchrun agents of all
  nodes meet at a rendezvous on the job's first node (``scontrol show hostnames $SLURM_JOB_NODELIST``),
  keyed by ``$SLURM_JOB_ID``; each node's rank comes from ``$SLURM_NODEID``;
- **CPU arithmetic**: ``--hint=nomultithread`` (physical cores only) and ``--cpus-per-task`` = processes
  per node × cores per process, where cores per process is the node's cores divided by its GPUs (Jean
  Zay: 40 / 4 = 10 on its V100 nodes, 64 / 8 = 8 on A100, 96 / 4 = 24 on H100), and
  ``OMP_NUM_THREADS`` = cores per process;
- **modules**: ``module purge`` and ``module load`` of the given modules (e.g. ``pytorch-gpu/py3/2.4.0``);
- **requeue before the time limit**: ``#SBATCH --requeue`` and ``#SBATCH --signal=B:USR1@SECONDS``: Slurm
  sends SIGUSR1 to the batch script that many seconds before the limit; its handler creates the stop
  file (``$METHODO_STOP_FILE``, seen by every node through the shared file system), the run stops after
  the epoch in progress and its checkpoint, and the script requeues the job; the requeued job (same job
  ID, ``SLURM_RESTART_COUNT`` > 0) resumes the same run dir, ``runs/NAME-slurm-JOBID``.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

from methodo.errors import BadInput

_TIME = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$|^\d+$")  # Slurm's forms: MM, HH:MM:SS, D-HH[:MM[:SS]]


@dataclass
class SlurmJob:
    """An sbatch job running ``methodo run CONFIG OVERRIDES`` on ``nodes`` × ``procs_per_node`` processes."""

    config: str
    overrides: list[str] = field(default_factory=list)
    name: str = "methodo"
    nodes: int = 1
    gpus_per_node: int = 0
    procs_per_node: int | None = None  # default: one per GPU (1 without GPUs)
    cpus_per_proc: int = 10  # physical cores per process: a node's cores ÷ its GPUs (Jean Zay V100: 40 / 4)
    cpus_per_task: int | None = None  # default: procs_per_node × cpus_per_proc
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str | None = None
    constraint: str | None = None
    modules: list[str] = field(default_factory=list)
    signal_margin: int = 120  # seconds before the time limit at which the run is asked to stop
    max_restarts: int = 0
    python: str = sys.executable
    port: int | None = None  # rendezvous port; default 20000 + job ID mod 20000

    @property
    def procs(self) -> int:
        return self.procs_per_node or max(1, self.gpus_per_node)

    @property
    def cpus(self) -> int:
        return self.cpus_per_task or self.procs * self.cpus_per_proc

    def check(self) -> None:
        """Bad values are :class:`BadInput` naming the option."""
        for flag, v, low in (("--nodes", self.nodes, 1), ("--gpus-per-node", self.gpus_per_node, 0),
                             ("--procs-per-node", self.procs, 1), ("--cpus-per-proc", self.cpus_per_proc, 1),
                             ("--cpus-per-task", self.cpus, 1), ("--signal-margin", self.signal_margin, 1),
                             ("--max-restarts", self.max_restarts, 0)):
            if v < low:
                raise BadInput(f"{flag} {v}: must be at least {low}")
        if self.gpus_per_node and self.procs_per_node and self.procs_per_node > self.gpus_per_node:
            raise BadInput(f"--procs-per-node {self.procs_per_node}: more processes than GPUs per node "
                           f"({self.gpus_per_node}); DDP runs one process per GPU")
        if self.cpus < self.procs:
            raise BadInput(f"--cpus-per-task {self.cpus}: fewer cores than processes per node ({self.procs})")
        if self.time is not None and not _TIME.match(self.time):
            raise BadInput(f"--time {self.time!r}: use Slurm's forms MM, HH:MM:SS or D-HH:MM:SS")
        for flag, v in (("--partition", self.partition), ("--account", self.account), ("--qos", self.qos),
                        ("--constraint", self.constraint), *(("--modules", m) for m in self.modules)):
            if v is not None and (not v or re.search(r"[\s'\"`$\\;]", v)):
                raise BadInput(f"{flag} {v!r}: one word without spaces, quotes or shell characters")

    def script(self) -> str:
        """The sbatch script (a bash script whose ``#SBATCH`` lines are Slurm's options)."""
        self.check()
        procs, world = self.procs, self.nodes * self.procs
        per_proc = max(1, self.cpus // procs)
        sb = [f"--job-name={self.name}", f"--nodes={self.nodes}",
              "--ntasks-per-node=1  # one torchrun agent per node; it starts the node's processes"]
        if self.gpus_per_node:
            sb.append(f"--gres=gpu:{self.gpus_per_node}")
        sb.append(f"--cpus-per-task={self.cpus}  # {procs} process(es) × {per_proc} physical core(s)")
        sb.append("--hint=nomultithread  # physical cores only, no hyperthreads")
        for key, v in (("partition", self.partition), ("account", self.account), ("qos", self.qos),
                       ("time", self.time), ("constraint", self.constraint)):
            if v is not None:
                sb.append(f"--{key}={v}")
        sb += [f"--output={self.name}-%j.out", f"--error={self.name}-%j.out",
               "--requeue  # the job may be put back in the queue: it resumes its run dir",
               f"--signal=B:USR1@{self.signal_margin}  # SIGUSR1 to this script {self.signal_margin} s before "
               "the time limit"]
        run = ["-m", "methodo", "run", self.config, *self.overrides, "--out", '"$METHODO_RUN_DIR"']
        run_line = " ".join(shlex.quote(a) if a != '"$METHODO_RUN_DIR"' else a for a in run)
        modules = ""
        if self.modules:
            modules = "module purge\n" + "".join(f"module load {m}\n" for m in self.modules)
        backend = "nccl, one GPU per process" if self.gpus_per_node else "gloo, CPU processes"
        port = str(self.port) if self.port else "$((20000 + SLURM_JOB_ID % 20000))"
        return f"""#!/bin/bash
# methodo run with DDP on {self.nodes} node(s) × {procs} process(es) = {world} ({backend}).
# Written by `methodo slurm`; submit it with `sbatch FILE` (or `methodo slurm ... --submit`).
{chr(10).join('#SBATCH ' + s for s in sb)}

set -euo pipefail
cd "${{SLURM_SUBMIT_DIR:-.}}"
{modules}export OMP_NUM_THREADS={per_proc}  # cores per process
export PYTHON=${{PYTHON:-{shlex.quote(self.python)}}}
# The run dir: the same for every attempt of this job (a requeued job keeps its ID and resumes it).
export METHODO_RUN_DIR=${{METHODO_RUN_DIR:-runs/{self.name}-slurm-$SLURM_JOB_ID}}
export METHODO_STOP_FILE="$METHODO_RUN_DIR.stop"
rm -f "$METHODO_STOP_FILE"
# Rendezvous of the nodes' torchrun agents: the job's first node.
export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT={port}

# Near the time limit Slurm sends SIGUSR1 here: ask the run to stop after its current epoch (and checkpoint).
trap 'echo "methodo: SIGUSR1, stopping after the current epoch to requeue" >&2; touch "$METHODO_STOP_FILE"' USR1

srun --kill-on-bad-exit=1 bash -c 'exec "$PYTHON" -m torch.distributed.run --nnodes="$SLURM_NNODES" \\
    --node-rank="$SLURM_NODEID" --nproc-per-node={procs} --rdzv-id="$SLURM_JOB_ID" --rdzv-backend=c10d \\
    --rdzv-endpoint="$MASTER_ADDR:$MASTER_PORT" --max-restarts={self.max_restarts} "$@"' torchrun \\
    {run_line} &
SRUN=$!
STATUS=0
wait "$SRUN" || STATUS=$?
while kill -0 "$SRUN" 2>/dev/null; do  # `wait` returned early because the trap ran: wait again
    STATUS=0
    wait "$SRUN" || STATUS=$?
done

if [ -e "$METHODO_STOP_FILE" ]; then
    rm -f "$METHODO_STOP_FILE"
    if ! grep -q '"status": "finished"' "$METHODO_RUN_DIR/summary.json" 2>/dev/null; then
        echo "methodo: requeueing job $SLURM_JOB_ID; it resumes $METHODO_RUN_DIR" >&2
        scontrol requeue "$SLURM_JOB_ID"
        exit 0
    fi
fi
exit "$STATUS"
"""


def submit(text: str) -> str:
    """Submit the script with ``sbatch`` (read from stdin); returns sbatch's answer."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise BadInput("--submit: sbatch is not on PATH (not a Slurm login node?); save the script instead: "
                       "methodo slurm CONFIG ... > job.sh, and submit it with sbatch job.sh")
    res = subprocess.run([sbatch], input=text, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise BadInput(f"--submit: sbatch refused the job: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    return res.stdout.strip()
