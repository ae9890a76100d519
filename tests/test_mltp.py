"""MLTP and the CML co-learner (docs/method.md#mltp, #cml-co-learner): the α-gradient identity, what each variant
differentiates, BatchNorm, the co-learner's place in the outer objective and outside the
classifier, resume, and every variant end to end on digits."""
import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from mgr import meta
from mgr.__main__ import main
from mgr.data import DataConfig, load
from mgr.models import SmallCNN, build_classifier
from mgr.models.classifier import accuracy
from mgr.runstore import METRIC_FIELDS
from mgr.trainer import TrainConfig, load_classifier, load_co_learner, train
from mgr.trainer.state import build, layer_group
from mgr.trainer.steps import mltp_batches, mltp_indices, mltp_step

from killed import kill_after_first_evaluation
from tests.waiting import TIMEOUT

DIGITS = DataConfig("digits", ratio=0.1)
ETA = 0.7


def tiny(**kw):
    return TrainConfig(**{**dict(data=DIGITS, steps=4, eval_every=2, log_every=2, batch_size=16, probes_per_class=2,
                                 probe_real=40, device="cpu"), **kw})


def C(model, params, x, y):
    """A task's loss at `params`, BatchNorm on batch statistics with throwaway buffers."""
    return F.cross_entropy(meta.call(model, params, meta.clone_buffers(model), x), y)


@pytest.fixture
def net():
    torch.manual_seed(0)
    model = SmallCNN(3, in_channels=1, width=4).double()
    x_i, y_i = torch.randn(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    x_j, y_j = torch.randn(5, 1, 8, 8, dtype=torch.float64), torch.tensor([2, 1, 0, 0, 1])
    params = dict(model.named_parameters())
    alpha = {n: torch.tensor(0.05 + 0.1 * k / len(params), dtype=torch.float64, requires_grad=True)
             for k, n in enumerate(params)}
    return model, params, alpha, (x_i, y_i, x_j, y_j)


def J_from_scratch(model, params, alpha, batches, second=True):
    """J(w, α) = C(w; B_i) + η C(w − α ⊙ ∇C(w; B_i); B_j), by plain autograd (no engine code)."""
    x_i, y_i, x_j, y_j = batches
    c_i = C(model, params, x_i, y_i)
    g_i = torch.autograd.grad(c_i, list(params.values()), create_graph=second, retain_graph=True)
    g_i = g_i if second else [g.detach() for g in g_i]
    ahead = {n: p - alpha[n] * g if n in alpha else p for (n, p), g in zip(params.items(), g_i)}
    return c_i + ETA * C(model, ahead, x_j, y_j), g_i, ahead


def test_alpha_gradient_is_minus_eta_times_the_inner_product_of_the_two_batch_gradients(net):
    model, params, alpha, batches = net
    J, g_i, ahead = J_from_scratch(model, params, alpha, batches)
    dJ_dalpha = torch.autograd.grad(J, list(alpha.values()))
    # docs/method.md#mltp: ∂J/∂α_l = −η ⟨∇_{w_l} C_j(w'), ∇_{w_l} C_i(w)⟩, from first derivatives only
    w_ahead = {n: p.detach().requires_grad_() for n, p in ahead.items()}
    g_j = torch.autograd.grad(C(model, w_ahead, *batches[2:]), list(w_ahead.values()))
    identity = torch.stack([-ETA * (a * b.detach()).sum() for a, b in zip(g_j, g_i)])
    assert identity.abs().min() > 1e-8  # every tensor's check is non-trivial
    assert torch.allclose(torch.stack(dJ_dalpha), identity, rtol=1e-9, atol=0)


def test_engine_full_is_exact_and_fo_drops_only_the_hessian_term(net):
    model, params, alpha, batches = net
    x_i, y_i, x_j, y_j = batches
    J, _, _ = J_from_scratch(model, params, alpha, batches)
    exact = torch.autograd.grad(J, [*params.values(), *alpha.values()])

    def engine(second):
        g = meta.grads_of(C(model, params, x_i, y_i), params, create_graph=second)
        ahead = meta.lookahead(params, g if second else [t.detach() for t in g], alpha)
        out = meta.outer_grads(ETA * C(model, ahead, x_j, y_j), ahead)
        back = meta.pullback(ahead, out.v, [*params.values(), *alpha.values()])
        return [a.detach() + b for a, b in zip(g, back)] + back[len(params):], out.main

    full, _ = engine(second=True)
    assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-13) for a, b in zip(full, exact))
    fo, g_j = engine(second=False)
    g_i = torch.autograd.grad(C(model, params, x_i, y_i), list(params.values()))
    n = len(params)
    # fo: ∂J/∂w ≈ ∇C_i(w) + η ∇C_j(w'), and the α-gradient needs no Hessian so it is the same as full's
    assert all(torch.allclose(f, a + b, rtol=1e-9, atol=1e-13) for f, a, b in zip(fo[:n], g_i, g_j))
    assert all(torch.allclose(f, e, rtol=1e-9, atol=1e-13) for f, e in zip(fo[n:], exact[n:]))
    assert max((f - e).norm() / e.norm() for f, e in zip(fo[:n], exact[:n])) > 1e-4  # the Hessian term is real


def test_lookahead_leaves_tensors_without_a_step_at_w(net):
    model, params, alpha, _ = net
    grads = [torch.randn_like(p) for p in params.values()]
    conv = {n: a for n, a in alpha.items() if layer_group(model)[n] == "conv"}
    ahead = meta.lookahead(params, grads, conv)
    assert conv and len(conv) < len(params)
    for (n, p), g in zip(params.items(), grads):
        assert torch.equal(ahead[n], p) if n not in conv else torch.allclose(ahead[n], p - conv[n] * g)


@pytest.mark.parametrize("variant", ["fo", "full", "conv", "fc"])
def test_mltp_step_gives_w_and_alpha_the_gradients_of_J(variant):
    s = build(tiny(method="base", procedure="mltp", mltp_variant=variant, mltp_eta=ETA, batch_size=8))
    kinds = layer_group(s.model)
    expected = {n for n, k in kinds.items() if variant in ("fo", "full") or k == variant}
    assert set(s.alpha) == expected and all(a.item() == torch.tensor(0.05).item() for a in s.alpha.values())  # α starts at the base lr
    torch.manual_seed(3)
    batches = mltp_batches(s)
    ref = copy.deepcopy(s.model)
    params = dict(ref.named_parameters())
    alpha = {n: a.detach().clone().requires_grad_() for n, a in s.alpha.items()}
    # J with the other tensors' lookahead at w (conv, fc), through the Hessian unless fo
    J, _, _ = J_from_scratch(ref, params, alpha, batches[:4], second=variant != "fo")
    want = torch.autograd.grad(J, [*params.values(), *alpha.values()])
    mltp_step(s, *batches)
    got = [p.grad for p in s.model.parameters()] + [a.grad for a in s.alpha.values()]
    for name, g, w in zip([*params, *(f"alpha[{n}]" for n in alpha)], got, want):
        assert torch.allclose(g, w, rtol=1e-3, atol=1e-6), name


@pytest.mark.parametrize("method", ["base", "pcr"])
def test_fo_takes_no_second_derivative(monkeypatch, method):
    flags = []
    real = torch.autograd.grad

    def spy(*args, **kw):
        flags.append(bool(kw.get("create_graph", False)))
        return real(*args, **kw)

    monkeypatch.setattr(torch.autograd, "grad", spy)
    s = build(tiny(method=method, procedure="mltp", mltp_variant="fo"))
    mltp_step(s, *mltp_batches(s))
    assert flags and not any(flags)
    flags.clear()  # the spy does see the second-order variant's graph
    s = build(tiny(method=method, procedure="mltp", mltp_variant="full"))
    mltp_step(s, *mltp_batches(s))
    assert any(flags)


def test_the_two_batches_are_disjoint_and_full_size():
    s = build(tiny(procedure="mltp", method="base", batch_size=128))  # digits 10%: 116 training images
    n = len(s.data.y_train)
    seen = set()
    for _ in range(20):
        i, j = mltp_indices(s)
        assert len(i) == len(j) == 128 and not set(i.tolist()) & set(j.tolist())
        seen |= set(i.tolist()) | set(j.tolist())
    assert seen == set(range(n))  # the halves change every step


@pytest.mark.parametrize("method, variant", [("base", "full"), ("pcr", "fo"), ("mgr", "fc")])
def test_mltp_step_updates_batchnorm_exactly_as_a_plain_forward_of_B_i(method, variant):
    s = build(tiny(method=method, procedure="mltp", mltp_variant=variant))
    batches = mltp_batches(s)
    ref = copy.deepcopy(s.model)
    ref.train()(batches[0])
    before = {n: b.clone() for n, b in s.model.named_buffers()}
    mltp_step(s, *batches)
    for n, b in s.model.named_buffers():
        assert torch.allclose(b.float(), dict(ref.named_buffers())[n].float()), n
        if n.endswith("running_mean"):
            assert not torch.equal(b, before[n])


def test_alpha_is_kept_at_or_above_zero():
    s = build(tiny(method="base", procedure="mltp", mltp_alpha=1e-6))
    s.opt.param_groups[1]["lr"] = 1e3  # one huge α step: tensors whose batch gradients disagree go below 0
    mltp_step(s, *mltp_batches(s))
    a = torch.stack(list(s.alpha.values()))
    assert a.min() == 0 and a.max() > 1e-6


def test_co_learner_learns_from_looked_ahead_features_and_joins_J():
    s = build(tiny(method="base", procedure="mltp", mltp_eta=ETA, co_learner=True, co_learner_gamma=0.5, batch_size=8))
    batches = mltp_batches(s)
    x_i, y_i, x_j, y_j = batches[:4]
    ref, co = copy.deepcopy(s.model), copy.deepcopy(s.co_learner)
    params = dict(ref.named_parameters())
    c_i = C(ref, params, x_i, y_i)
    g_i = [g.detach() for g in torch.autograd.grad(c_i, list(params.values()), retain_graph=True)]
    ahead = {n: p - s.alpha[n].detach() * g for (n, p), g in zip(params.items(), g_i)}  # w' for the classifier only
    logits, fmap = meta.call(ref, ahead, meta.clone_buffers(ref), x_j, feature_map=True)
    J = c_i + ETA * F.cross_entropy(logits, y_j) + 0.5 * F.cross_entropy(co(fmap), y_j)  # χ as it is: no lookahead
    want = torch.autograd.grad(J, [*params.values(), *co.parameters()])
    co_before = copy.deepcopy(s.co_learner.state_dict())
    mltp_step(s, *batches)
    got = [p.grad for p in s.model.parameters()] + [p.grad for p in s.co_learner.parameters()]
    assert all(torch.allclose(g, w, rtol=1e-3, atol=1e-6) for g, w in zip(got, want))
    assert any(not torch.equal(v, s.co_learner.state_dict()[k]) for k, v in co_before.items())  # its Adam stepped


def test_co_learner_is_saved_apart_and_never_part_of_inference(tmp_path):
    run = train(tiny(method="mgr", co_learner=True), tmp_path, quiet=True)
    best = torch.load(run.path / "best.pt", weights_only=True)
    assert set(best) == {"format", "version", "meta", "model"}
    assert set(best["model"]) == set(build_classifier("smallcnn", 10, 1).state_dict())
    co, m = load_co_learner(run.path / "co_learner.pt")
    assert m["step"] == best["meta"]["step"] and co(torch.zeros(2, 128, 2, 2)).shape == (2, 10)
    last = torch.load(run.path / "last.pt", weights_only=True)
    assert {"co_learner", "co_opt"} <= set(last)
    # the reported accuracy is the classifier's alone: best.pt, with no co-learner, reproduces it
    model, m = load_classifier(run.path / "best.pt")
    data = load(DIGITS)
    assert accuracy(model, data.x_test, data.y_test) == m["test_acc"]
    assert any(r.get("co_acc") is not None for r in run.metrics())


@pytest.mark.parametrize("kw", [dict(method="base", procedure="mltp"), dict(method="mgr")], ids=["mltp", "mps"])
def test_a_co_learner_with_zero_weight_leaves_the_run_unchanged(tmp_path, kw):
    """The co-learner is initialised under a forked RNG and adds exactly γ·(its gradient): with γ = 0 the
    classifier's trajectory is bit-identical to the run without it, so runs with and without are paired."""
    keep = ("ce", "loss", "val_loss", "test_loss", "train_acc")
    without = train(tiny(**kw), tmp_path, quiet=True).metrics()
    zero = train(tiny(**kw, co_learner=True, co_learner_gamma=0.0), tmp_path, quiet=True).metrics()
    assert [{k: r[k] for k in keep} for r in zero] == [{k: r[k] for k in keep} for r in without]
    assert all("co_acc" in r for r in zero)


VARIANTS = [dict(method="base", procedure="mltp", mltp_variant="fo"),
            dict(method="base", procedure="mltp", mltp_variant="full"),
            dict(method="base", procedure="mltp", mltp_variant="conv"),
            dict(method="base", procedure="mltp", mltp_variant="fc", co_learner=True, co_learner_arch="linear"),
            dict(method="gda", procedure="mltp", mltp_variant="fo"),
            dict(method="mgr", procedure="mltp", mltp_variant="fo", co_learner=True),
            dict(method="mgr", procedure="mltp", mltp_variant="full"),
            dict(method="mgr", co_learner=True, meta_every=1)]  # hg_cos needs 2 meta steps by the first evaluation


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(str(v) for v in kw.values()))
def test_each_variant_trains_on_digits_and_logs_its_fields(tmp_path, kw):
    run = train(tiny(**kw), tmp_path, quiet=True)
    assert run.status()["state"] == "finished"
    rows, cfg = run.metrics(), run.config
    assert [r["step"] for r in rows] == [2, 4] and run.probe_steps() == [2, 4]
    mltp, groups = kw.get("procedure") == "mltp", {"fo": "conv bn fc", "full": "conv bn fc", "conv": "conv", "fc": "fc"}
    for r in rows:
        assert set(r) <= set(METRIC_FIELDS), set(r) - set(METRIC_FIELDS)
        assert r["ce"] > 0 and 0 <= r["val_acc"] <= 1
        if mltp:  # B_i and B_j: two batches of real images per step
            assert r["epoch"] == round(r["step"] * 2 * 16 / 116, 3) and r["mltp_ce_j"] > 0
            assert -1 <= r["mltp_grad_cos"] <= 1
            for g in groups[cfg["mltp_variant"]].split():
                assert 0 <= r[f"alpha_{g}_min"] <= r[f"alpha_{g}_mean"] <= r[f"alpha_{g}_max"]
            assert not any(k.startswith("alpha_") and k.split("_")[1] not in groups[cfg["mltp_variant"]] for k in r)
        else:
            assert not any(k.startswith(("alpha_", "mltp_")) for k in r)
        if kw.get("co_learner"):
            assert 0 <= r["co_acc"] <= 1 and r["co_ce"] > 0 and -1 <= r["co_grad_cos"] <= 1
        if kw["method"] == "mgr":
            assert r["meta_val_ce"] > 0 and r["pcr"] > 0 and r["latent_shift"] > 0 and -1 <= r["hg_cos"] <= 1
    if mltp:
        assert cfg["mltp_alpha"] == cfg["lr"] == 0.05
    if kw["method"] != "base":
        assert run.load_probe(4)["finder_probs"].shape == (20, 10)
    assert load_classifier(run.path / "best.pt")[0](torch.zeros(1, 1, 8, 8)).shape == (1, 10)


def test_defaults_are_written_into_config_json(tmp_path):
    cfg = train(tiny(method="base", procedure="mltp"), tmp_path, quiet=True).config
    assert (cfg["procedure"], cfg["mltp_variant"], cfg["mltp_eta"], cfg["mltp_alpha"]) == ("mltp", "fo", 1.0, 0.05)
    assert (cfg["co_learner"], cfg["co_learner_arch"], cfg["co_learner_gamma"], cfg["co_learner_lr"]) == \
        (False, "conv", 1.0, 1e-3)
    assert TrainConfig.from_dict(cfg) == TrainConfig.from_dict(cfg)  # and they load back


@pytest.mark.parametrize("argv, message", [
    (["--co-learner", "--method", "pcr"], "co_learner=True is not allowed; the co-learner reads looked-ahead "
                                          "features, and method 'pcr' under procedure 'standard' takes no lookahead; "
                                          "use method gda-mps or mgr, or procedure mltp"),
    (["--co-learner", "--method", "base"], "method 'base' under procedure 'standard' takes no lookahead"),
    (["--procedure", "mltp", "--mltp-eta", "-1"], "mltp_eta=-1.0 is not allowed; it must be a number >= 0"),
    (["--procedure", "mltp", "--mltp-alpha", "nan"], "mltp_alpha=nan is not allowed"),
    (["--method", "mgr", "--co-learner", "--co-learner-lr", "0"], "co_learner_lr=0.0 is not allowed; it must be a number > 0"),
    (["--method", "mgr", "--co-learner", "--co-learner-gamma", "-2"], "co_learner_gamma=-2.0 is not allowed"),
])
def test_bad_mltp_and_co_learner_options_fail_before_any_work(tmp_path, capsys, argv, message):
    assert main(["train", "--ratio", "0.1", "--runs-dir", str(tmp_path / "runs"), "--device", "cpu", "--steps", "3",
                 *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("argv", [["--procedure", "maml"], ["--mltp-variant", "second"], ["--co-learner-arch", "mlp"]])
def test_unknown_choices_are_named(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(["train", *argv])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_killed_mltp_run_with_co_learner_resumes_to_the_same_numbers(tmp_path):
    """Resume restores w, α (and their optimizer), the co-learner and its Adam, and the RNG: the
    metrics after a kill and resume are those of a run that never stopped, bit for bit."""
    run = kill_after_first_evaluation(["--dataset", "digits", "--ratio", "0.1", "--device", "cpu", "--runs-dir",
                                       str(tmp_path / "killed"), "--quiet", "--batch-size", "16", "--probes-per-class",
                                       "2", "--probe-real", "40", "--method", "base", "--procedure", "mltp",
                                       "--co-learner", "--steps", "24", "--eval-every", "4", "--log-every", "4"])
    run_dir = str(run.path)
    assert run.status()["state"] == "running" and run.status()["step"] < 24
    r = subprocess.run([sys.executable, "-m", "mgr", "train", "--resume", run_dir, "--quiet"], capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    straight = train(TrainConfig.from_dict(run.config), tmp_path / "straight", quiet=True)
    drop = lambda rows: [{k: v for k, v in r.items() if k not in ("img_per_s", "elapsed")} for r in rows]  # noqa: E731
    assert [r["step"] for r in run.metrics()] == list(range(4, 25, 4))
    assert drop(run.metrics()) == drop(straight.metrics())
    assert drop(run.scalars()) == drop(straight.scalars())
