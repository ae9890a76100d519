"""One run on two CPU processes (torchrun, gloo): one run directory written by rank 0, the gradients
every rank applies equal to the single-process gradient of the whole batch, a batch that does not
split refused, and a run resumed with another number of processes (docs/scale.md)."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from mgr.runstore import Run

from killed import kill_after_first_evaluation
from tests.waiting import TIMEOUT

REPO = Path(__file__).resolve().parent.parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MGR_THREADS": "1", "PYTHONPATH": str(REPO)}
SMALL = ["--dataset", "digits", "--ratio", "0.1", "--device", "cpu", "--quiet", "--probes-per-class", "2",
         "--probe-real", "40"]


def torchrun(n, *args, timeout=TIMEOUT):
    return subprocess.run([*TORCHRUN, "--nproc-per-node", str(n), *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def test_two_processes_train_one_run_written_by_rank_0(tmp_path):
    r = torchrun(2, "-m", "mgr", "train", *SMALL, "--method", "mgr", "--steps", "6", "--eval-every", "3",
                 "--log-every", "2", "--batch-size", "16", "--runs-dir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1 and r.stdout.splitlines()[0] == str(runs[0])  # rank 0 alone made it and printed it
    assert r.stdout.count("finished:") == 1
    run = Run(runs[0])
    st = run.status()
    assert st["state"] == "finished" and st["world_size"] == 2 and st["step"] == 6
    assert run.config["batch_size"] == 16  # the global batch: 8 per process
    assert [m["step"] for m in run.metrics()] == [3, 6] and run.probe_steps() == [3, 6]
    assert [s["step"] for s in run.scalars()] == [2, 3, 4, 6]
    assert all(m["epoch"] == round(m["step"] * 16 / 116, 3) for m in run.metrics())  # both ranks' images count
    assert (run.path / "best.pt").exists() and (run.path / "last.pt").exists()


def test_a_batch_that_does_not_split_is_refused_before_any_work(tmp_path):
    r = torchrun(2, "-m", "mgr", "train", *SMALL, "--method", "base", "--steps", "2", "--batch-size", "15",
                 "--runs-dir", str(tmp_path / "runs"))
    assert r.returncode != 0
    assert "batch_size=15 does not split across 2 processes" in r.stderr
    assert r.stderr.count("error: batch_size=15") == 1  # said once, by rank 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


WORKER = textwrap.dedent('''
    """Each rank: the base method's plain_step on its half of one fixed batch, then step_with on grads
    that differ per rank; saves what the optimizers applied."""
    import sys
    import torch
    from mgr.data import DataConfig
    from mgr.trainer import TrainConfig, distributed
    from mgr.trainer.state import build
    from mgr.trainer.steps import plain_step, step_with

    def without_batchnorm(model):
        # per-rank BatchNorm statistics make a half batch's gradient differ from the whole batch's;
        # without BatchNorm the mean of the halves' gradients is the whole batch's gradient
        for name, m in model.named_children():
            if isinstance(m, torch.nn.BatchNorm2d):
                setattr(model, name, torch.nn.Identity())
            else:
                without_batchnorm(m)

    torch.set_num_threads(1)
    distributed.init()
    cfg = TrainConfig(data=DataConfig("digits", ratio=0.1), method="base", steps=10, batch_size=32, device="cpu",
                      width=8)
    s = build(cfg)
    without_batchnorm(s.model)
    s.forward = s.model
    s.opt = torch.optim.SGD(s.model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    s.sched = torch.optim.lr_scheduler.LambdaLR(s.opt, lambda step: 1.0)
    i = torch.randint(len(s.data.y_train), (32,), generator=torch.Generator().manual_seed(7))
    r, n = distributed.rank(), distributed.world()
    mine = i.chunk(n)[r]
    plain_step(s, s.data.x_train[mine], s.data.y_train[mine])
    w = torch.nn.Parameter(torch.zeros(3))
    step_with(torch.optim.SGD([w], lr=1.0), [w], [torch.full((3,), float(r))])
    torch.save({"grads": {k: p.grad for k, p in s.model.named_parameters()},
                "params": {k: p.detach() for k, p in s.model.named_parameters()}, "w_grad": w.grad},
               f"{sys.argv[1]}/rank{r}.pt")
    distributed.close()
''')


def test_every_rank_applies_the_single_process_gradient_of_the_whole_batch(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr
    two = torchrun(2, str(script), str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr
    single = torch.load(tmp_path / "one" / "rank0.pt")
    ranks = [torch.load(tmp_path / "two" / f"rank{r}.pt") for r in (0, 1)]
    for k, g in single["grads"].items():
        for rk in ranks:
            torch.testing.assert_close(rk["grads"][k], g, rtol=1e-5, atol=1e-7)
        assert torch.equal(ranks[0]["grads"][k], ranks[1]["grads"][k])  # the same averaged gradient ...
        assert torch.equal(ranks[0]["params"][k], ranks[1]["params"][k])  # ... so the same weights after the step
    assert torch.equal(single["w_grad"], torch.zeros(3))  # one process: its own gradient, untouched
    assert all(torch.equal(rk["w_grad"], torch.full((3,), 0.5)) for rk in ranks)  # the mean of 0 and 1


def test_a_killed_single_process_run_resumes_on_two_processes(tmp_path):
    run = kill_after_first_evaluation([*SMALL, "--method", "mgr", "--steps", "30", "--eval-every", "3",
                                       "--batch-size", "16", "--runs-dir", str(tmp_path)], cwd=REPO, env=ENV)
    run_dir = str(run.path)
    assert run.status()["state"] == "running" and run.status()["world_size"] == 1
    stopped = run.status()["step"]
    assert stopped < 30
    r = torchrun(2, "-m", "mgr", "train", "--resume", run_dir, "--quiet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == run_dir
    st = run.status()
    assert st["state"] == "finished" and st["world_size"] == 2
    steps = [m["step"] for m in run.metrics()]
    assert steps == list(range(3, 31, 3)) and run.probe_steps() == steps
    assert json.loads((run.path / "config.json").read_text())["batch_size"] == 16
