"""The classifier trainer: base, gda, gda-mps, pcr and mgr on one loop, under the standard
procedure or MLTP, optionally with the CML co-learner (docs/method.md). It imports only torch,
torchvision and numpy, so it runs the same from the app, a shell or a GPU box.

    config.py       TrainConfig: every option, validated at construction
    state.py        State (what a run holds while training) and build(cfg)
    steps.py        plain_step, mps_step, mltp_step: one iteration each, top to bottom
    probes.py       what the app's views read at each evaluation
    checkpoints.py  last.pt / best.pt / co_learner.pt
    loop.py         train(cfg) and resume(run_dir): the loop and the run directory's bookkeeping
    distributed.py  torchrun: process group, ranks, the gradients' all-reduce (no-ops in one process)
"""
from .checkpoints import CKPT_KIND, CKPT_VERSION, load_classifier, load_co_learner
from .config import FINDER_ACTIVATIONS, FINDER_LR_SCHEDULES, LAM_KL_SCHEDULES, META_PRECISIONS, META_VALS, METHODS, MLTP_VARIANTS, PROCEDURES, SCHEDULES, TrainConfig
from .loop import resume, train

__all__ = ["CKPT_KIND", "CKPT_VERSION", "FINDER_ACTIVATIONS", "FINDER_LR_SCHEDULES", "LAM_KL_SCHEDULES", "META_PRECISIONS", "META_VALS", "METHODS", "MLTP_VARIANTS", "PROCEDURES", "SCHEDULES", "TrainConfig", "load_classifier",
           "load_co_learner", "resume", "train"]
