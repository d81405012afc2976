"""Methods by name: the same images as the direct calls, and per-scan values checked against brute force (χ²,
MAP stop reasons and steps, the posterior scan flag on in- and out-of-distribution data)."""

from dataclasses import replace

import pytest
import torch
from conftest import DenseOperator
from gaussian_prior import gaussian_case

from pa_recon.errors import PAReconError
from pa_recon.recon import (
    START_KINDS,
    STOP_REASONS,
    AdamSettings,
    LBFGSSettings,
    Problem,
    back_projection,
    cgls,
    map_image,
    map_latent,
    MethodSpec,
    check_prior_kind,
    flag_rule,
    latent_start_mismatch,
    method_names,
    method_settings,
    needs_prior,
    operator_norm,
    parse_method,
    reconstruct,
    tv_reconstruction,
)


def brute_chi2(op: DenseOperator, x: torch.Tensor, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """‖A x − y‖² / (σ² M) per scan, with the matrix written out."""
    r = x.flatten(1) @ op.matrix.T - y.flatten(1)
    return (r**2).sum(1) / (sigma**2 * op.matrix.shape[0])


def test_named_methods_equal_the_direct_calls_and_report_their_chi2(dense_problem):
    op, y = dense_problem.op, dense_problem.y
    norm = operator_norm(op, dtype=torch.float64)
    lam = 0.01 * norm**2
    expected = {
        "bp": back_projection(op, y, filter="ramp", nonneg=False),
        "cgls": cgls(op, y, lam=lam, n_iter=7, tol=0.0).image,
        "tv": tv_reconstruction(op, y, lam=lam, n_iter=9, nonneg=False, op_norm=norm).image,
    }
    settings = {
        "bp": {"filter": "ramp", "nonneg": False},
        "cgls": {"lam_fraction": 0.01, "n_iter": 7, "tol": 0.0},
        "tv": {"lam_fraction": 0.01, "n_iter": 9, "nonneg": False},
    }
    sigma = torch.tensor([0.1, 0.02, 0.3], dtype=y.dtype)
    problem = Problem(op, y, sigma, norm)
    for method, image in expected.items():
        assert not needs_prior(method)
        out = reconstruct(method, problem, settings[method])
        torch.testing.assert_close(out.maps["image"], image)
        assert set(out.per_scan) == {"chi2"} and out.labels == {}
        torch.testing.assert_close(out.per_scan["chi2"], brute_chi2(op, image, y, sigma), rtol=1e-12, atol=0)
        assert torch.all(out.per_scan["chi2"] > 0)


def test_chi2_is_nan_for_a_scan_without_a_noise_level(dense_problem):
    op, y = dense_problem.op, dense_problem.y + 0.01
    sigma = torch.tensor([0.1, 0.0, 0.1], dtype=y.dtype)
    chi2 = reconstruct("bp", Problem(op, y, sigma, 1.0)).per_scan["chi2"]
    assert torch.isnan(chi2[1]) and torch.isfinite(chi2[[0, 2]]).all()
    torch.testing.assert_close(chi2[[0, 2]], brute_chi2(op, back_projection(op, y, nonneg=True), y, sigma)[[0, 2]])


@pytest.mark.parametrize("method", ["map", "map_latent"])
@pytest.mark.parametrize("tau, reason, steps", [(1e6, "discrepancy", 0), (1e-6, "max_steps", 4)])
def test_map_reports_stop_reason_steps_and_chi2_per_scan(dense_op, method, tau, reason, steps):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior)
    out = reconstruct(method, problem, {"tau": tau, "steps": 4, "check_every": 1, "lam": 3.0}
                      if method == "map" else {"tau": tau, "steps": 4, "check_every": 1})
    # A marginal prior's auto start is the TV image: a start code, no latent-start NLL.
    assert list(out.per_scan) == ["chi2", "stop_reason", "steps", "objective", "start"][:4 + (method == "map")]
    assert out.labels == {"stop_reason": STOP_REASONS, **({"start": START_KINDS} if method == "map" else {})}
    if method == "map":
        assert [START_KINDS[int(c)] for c in out.per_scan["start"]] == ["tv"] * 3
    assert [STOP_REASONS[int(c)] for c in out.per_scan["stop_reason"]] == [reason] * 3
    assert out.per_scan["steps"].tolist() == [steps] * 3
    # The objective is the minimised one at the returned image: data term plus the prior's penalty.
    data_term = 0.5 * brute_chi2(case.op, out.maps["image"], case.y, case.sigma) * case.y[0].numel()
    penalty = (3.0 * case.prior.nll(out.maps["image"]) if method == "map"
               else 0.5 * sum(z.pow(2).flatten(1).sum(1) for z in case.prior.encode(out.maps["image"])))
    torch.testing.assert_close(out.per_scan["objective"], data_term + penalty, rtol=1e-9, atol=0)
    chi2 = out.per_scan["chi2"]
    torch.testing.assert_close(chi2, brute_chi2(case.op, out.maps["image"], case.y, case.sigma), rtol=1e-12, atol=0)
    # A scan stops by the discrepancy principle exactly when its χ² is within tau.
    assert torch.all(chi2 <= tau) if reason == "discrepancy" else torch.all(chi2 > tau)


def test_map_reports_each_scans_start_and_the_nll_of_a_latent_start(dense_op):
    case = gaussian_case(dense_op, [0.02, 0.02, 0.02], conditional=True, noise=0.1)
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior)
    free = reconstruct("map", problem, {"steps": 0})
    nll = free.per_scan["start_nll"]
    assert [START_KINDS[int(c)] for c in free.per_scan["start"]] == ["latent"] * 3
    middle = float(nll.median())
    split = reconstruct("map", problem, {"steps": 0, "latent_nll_max": middle})
    assert [START_KINDS[int(c)] for c in split.per_scan["start"]] == ["tv" if v > middle else "latent" for v in nll]
    torch.testing.assert_close(split.per_scan["start_nll"], nll, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["map", "map_latent"])
def test_model_error_widens_the_likelihood_but_not_the_reported_chi2(dense_op, method):
    case = gaussian_case(dense_op, [0.05, 0.1, 0.2])
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior)
    settings = {"steps": 30, "tau": None}
    widened = (case.sigma**2 + 0.2**2 * case.y.pow(2).flatten(1).mean(1)).sqrt()
    out = reconstruct(method, problem, {**settings, "model_error": 0.2})
    same = reconstruct(method, Problem(case.op, case.y, widened, 1.0, prior=case.prior), settings)
    torch.testing.assert_close(out.maps["image"], same.maps["image"], rtol=0, atol=1e-12)
    assert not torch.allclose(out.maps["image"], reconstruct(method, problem, settings).maps["image"])
    torch.testing.assert_close(out.per_scan["chi2"], brute_chi2(case.op, out.maps["image"], case.y, case.sigma),
                               rtol=1e-12, atol=0)
    with pytest.raises(PAReconError, match="model_error"):
        reconstruct(method, problem, {**settings, "model_error": -1.0})


def test_map_of_a_conditional_prior_starts_from_a_latent_map_of_latent_steps(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior)
    out = reconstruct("map", problem, {"steps": 0, "latent_steps": 7, "model_error": 0.1})
    sigma = (case.sigma**2 + 0.01 * case.y.pow(2).flatten(1).mean(1)).sqrt()
    expected = map_latent(case.op, case.y, sigma, case.prior, settings=AdamSettings(steps=7, lr=5e-2)).image
    torch.testing.assert_close(out.maps["image"], expected, rtol=0, atol=0)
    assert out.per_scan["steps"].tolist() == [0, 0]


def test_map_takes_a_given_latent_start_from_the_problem(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    start = torch.full_like(case.x, 0.3)
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior, latent_start=start)
    out = reconstruct("map", problem, {"steps": 4, "latent_steps": 7})
    expected = map_image(case.op, case.y, case.sigma, case.prior, settings=AdamSettings(steps=4),
                         latent_start=start)
    torch.testing.assert_close(out.maps["image"], expected.image, rtol=0, atol=0)
    assert out.per_scan["start"].tolist() == [START_KINDS.index("latent")] * 2
    torch.testing.assert_close(out.per_scan["start_nll"], expected.start_nll, rtol=0, atol=0)


@pytest.mark.parametrize("map_changes, latent_changes, reason", [
    ({}, {}, None),
    ({"lam": 5.0, "steps": 9, "lr": 0.3, "tau": None, "init": "latent"}, {}, None),  # the image steps' own settings
    ({"latent_steps": 150}, {}, "this run's latent start takes AdamSettings(steps=150"),
    ({}, {"lr": 0.02}, "its latent MAP ran AdamSettings(steps=200, lr=0.02"),
    ({}, {"lr_decay": 0.5}, "lr_decay=0.5"),
    ({}, {"tau": None}, "tau=None"),
    ({"optimizer": "lbfgs"}, {}, "LBFGSSettings"),
    ({}, {"model_error": 0.1}, "its latent MAP ran with model_error 0.1, this run's latent start takes 0.05"),
])
def test_a_map_latent_run_is_a_map_runs_latent_start_when_its_step_rule_and_model_error_match(
        map_changes, latent_changes, reason):
    common = {"optimizer": "adam", "model_error": 0.05}
    map_settings = method_settings("map", {**common, "latent_steps": 200, **map_changes})
    latent_settings = method_settings("map_latent", {**common, "steps": 200, **latent_changes})
    mismatch = latent_start_mismatch(map_settings, latent_settings)
    assert mismatch is None if reason is None else reason in mismatch


@pytest.mark.parametrize("method", ["map", "map_latent"])
def test_the_optimizer_setting_picks_lbfgs_for_the_steps_and_the_latent_start(dense_op, method):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=True)
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior)
    settings = {"optimizer": "lbfgs", "memory": 3, "steps": 6, "tau": None,
                **({"latent_steps": 5} if method == "map" else {"lr": 0.02})}
    out = reconstruct(method, problem, settings)
    if method == "map":
        start = map_latent(case.op, case.y, case.sigma, case.prior,
                           settings=LBFGSSettings(steps=5, memory=3, lr=5e-2)).image
        expected = map_image(case.op, case.y, case.sigma, case.prior, x0=start,
                             settings=LBFGSSettings(steps=6, memory=3, tau=None)).image
    else:
        expected = map_latent(case.op, case.y, case.sigma, case.prior,
                              settings=LBFGSSettings(steps=6, memory=3, lr=0.02, tau=None)).image
    torch.testing.assert_close(out.maps["image"], expected, rtol=0, atol=0)
    adam = reconstruct(method, problem, {**settings, "optimizer": "adam"})
    assert not torch.allclose(out.maps["image"], adam.maps["image"])


@pytest.fixture
def tall_op() -> DenseOperator:
    """400 × 20 Gaussian matrix: M = 400 data values per scan, so a consistent mean's χ² is 1 − 20/400 ± 0.07."""
    matrix = torch.randn(400, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64) / 6
    return DenseOperator(matrix, (1, 4, 5), (4, 100))


def posterior(case, y: torch.Tensor | None = None, **settings) -> dict[str, torch.Tensor]:
    problem = Problem(case.op, case.y if y is None else y, case.sigma, operator_norm(case.op, dtype=torch.float64),
                      prior=case.prior, generator=torch.Generator().manual_seed(0))
    return reconstruct("posterior", problem, {"n_samples": 16, "chunk": 8, **settings}).per_scan


def test_posterior_scan_flag_is_off_for_in_distribution_data(tall_op):
    case = gaussian_case(tall_op, [0.1] * 4, conditional=True)
    values = posterior(case)
    assert list(values) == ["chi2", "acceptance", "samples", "chi2_median", "scan_flag"]
    assert values["scan_flag"].dtype == torch.bool and not values["scan_flag"].any()
    assert torch.all(values["acceptance"] == 1) and torch.all((values["chi2"] - 1).abs() < 0.3)
    assert values["samples"].dtype == torch.int64 and values["samples"].tolist() == [16] * 4
    assert torch.all(values["chi2_median"] > values["chi2"])  # a sample fits worse than the mean


@pytest.mark.parametrize("scale, noise", [(3.0, 0.1), (1.0, 0.02), (1.0, 0.3)])
def test_posterior_scan_flag_is_on_for_data_of_another_scale_or_noise_level(tall_op, scale, noise):
    """Stated σ = 0.1 throughout; the data are scaled or carry another noise level. All samples are kept, so only
    the χ² of the mean can raise the flag."""
    case = gaussian_case(tall_op, [0.1] * 4, noise=noise, conditional=True)
    values = posterior(case, scale * case.y, chi2_tol=None)
    assert values["scan_flag"].all() and torch.all(values["acceptance"] == 1)
    assert torch.all((values["chi2"] - 1).abs() > 0.5)
    # The band is a setting: wide enough, nothing is flagged.
    assert not posterior(case, scale * case.y, chi2_tol=None, scan_chi2_tol=100.0)["scan_flag"].any()


def test_posterior_judges_its_samples_against_noise_and_model_error(tall_op):
    """Data with 3× the stated noise: the samples miss by χ² ≈ 9 against σ = 0.1, but fit σ plus a model error of
    the missing √8 σ, here ≈ 0.28 / rms(y)."""
    case = gaussian_case(tall_op, [0.1] * 4, noise=0.3, conditional=True)
    eta = float((0.08**0.5 / case.y.pow(2).flatten(1).mean(1).sqrt()).mean())
    assert posterior(case)["scan_flag"].all()
    values = posterior(case, model_error=eta)
    assert not values["scan_flag"].any() and torch.all(values["acceptance"] > 0.5)
    assert torch.all(values["chi2"] > 5)  # the reported χ² stays against the noise alone


def test_posterior_scan_flag_is_on_when_no_sample_is_accepted(tall_op):
    case = gaussian_case(tall_op, [0.1] * 4, conditional=True)
    values = posterior(case, 3 * case.y, scan_chi2_tol=100.0)
    assert torch.all(values["acceptance"] == 0) and values["scan_flag"].all()


def test_settings_fill_defaults_and_reject_unknown_keys():
    assert method_settings("tv", {"n_iter": 5})["n_iter"] == 5
    assert method_settings("tv")["nonneg"] is True
    assert method_settings("posterior")["scan_chi2_tol"] == 0.5
    assert flag_rule(method_settings("posterior", {"std_pool": 1.5})).std_pool == 1.5
    with pytest.raises(PAReconError, match="reconstruct.cgls"):
        method_settings("cgls", {"lambda": 1.0})
    with pytest.raises(PAReconError, match="method"):
        method_settings("fbp")
    with pytest.raises(PAReconError, match="scan_chi2_tol"):
        reconstruct("posterior", Problem(None, None, None, 1.0, prior=object()), {"scan_chi2_tol": -1.0})


@pytest.mark.parametrize("conditional", [False, True])
def test_map_weights_each_kind_of_prior_by_its_own_lam(dense_op, conditional):
    case = gaussian_case(dense_op, [0.1, 0.1], conditional=conditional)
    problem = Problem(case.op, case.y, case.sigma, 1.0, prior=case.prior)
    fixed = {"init": "backprojection", "steps": 5, "tau": None}
    per_kind = reconstruct("map", problem, {**fixed, "lam": {"marginal": 0.5, "conditional": 4.0}})
    own = reconstruct("map", problem, {**fixed, "lam": 4.0 if conditional else 0.5})
    other = reconstruct("map", problem, {**fixed, "lam": 0.5 if conditional else 4.0})
    assert torch.equal(per_kind.maps["image"], own.maps["image"])
    assert not torch.allclose(per_kind.maps["image"], other.maps["image"])


@pytest.mark.parametrize(("method", "setting", "field"), [
    ("bp", {"filter": "hann"}, "reconstruct.bp.filter"),
    ("bp", {"nonneg": "yes"}, "reconstruct.bp.nonneg"),
    ("cgls", {"tol": "small"}, "reconstruct.cgls.tol"),
    ("tv", {"n_iter": 2.5}, "reconstruct.tv.n_iter"),
    ("map", {"init": "zeros"}, "reconstruct.map.init"),
    ("map", {"lam": {"marginal": 3.0}}, "reconstruct.map.lam"),
    ("map", {"lam": {"marginal": 3.0, "conditional": 1.0, "other": 2.0}}, "reconstruct.map.lam"),
    ("map", {"lam": {"marginal": 3.0, "conditional": "one"}}, "reconstruct.map.lam.conditional"),
    ("map", {"lam": -1.0}, "reconstruct.map.lam"),
    ("map", {"latent_steps": -1}, "reconstruct.map.latent_steps"),
    ("map", {"lr": 0.0}, "reconstruct.map.lr"),
    ("map", {"optimizer": "sgd"}, "reconstruct.map.optimizer"),
    ("map", {"optimizer": "lbfgs", "memory": 0}, "reconstruct.map.memory"),
    ("map_latent", {"optimizer": ["adam"]}, "reconstruct.map_latent.optimizer"),
    ("map_latent", {"model_error": -0.1}, "reconstruct.map_latent.model_error"),
    ("posterior", {"threshold": 2.0}, "reconstruct.posterior.threshold"),
    ("posterior", {"n_samples": 1}, "reconstruct.posterior.n_samples"),
    ("posterior", {"std_pool": -1.0}, "reconstruct.posterior.std_pool"),
    ("posterior", {"refine_steps": 5, "temperature": 0.0}, "reconstruct.posterior.temperature"),
    ("tv", {"lam_fraction": "1e-3"}, "reconstruct.tv.lam_fraction"),
    ("cgls", {"lam_fraction": True}, "reconstruct.cgls.lam_fraction"),
    ("map", {"model_error": "0.05"}, "reconstruct.map.model_error"),
    ("posterior", {"refine_steps": 5, "refine_lr": "15e-2"}, "reconstruct.posterior.refine_lr"),
    ("posterior", {"refine_steps": 5, "refine_lr": 0.0}, "reconstruct.posterior.refine_lr"),
    ("posterior", {"refine_steps": -2}, "reconstruct.posterior.refine_steps"),
])
def test_bad_setting_values_are_named_by_their_params_key_before_any_work(method, setting, field):
    with pytest.raises(PAReconError, match=f"^{field}: "):
        method_settings(method, setting)
    # No problem is touched: the settings fail first.
    with pytest.raises(PAReconError, match=f"^{field}: "):
        reconstruct(method, Problem(None, None, None, 1.0, prior=object()), setting)


def test_method_names_parse_to_a_method_and_the_kind_of_prior_it_takes():
    assert parse_method("tv") == MethodSpec("tv", None) and parse_method("tv").name == "tv"
    assert parse_method("map-conditional") == parse_method("map_conditional") == MethodSpec("map", "conditional")
    assert parse_method("map_latent-marginal") == parse_method("map_latent_marginal") == MethodSpec("map_latent",
                                                                                                 "marginal")
    assert parse_method("map_latent_marginal").name == "map_latent_marginal"
    for name in method_names():
        spec = parse_method(name)
        assert spec.label == name
        assert needs_prior(spec.method) or spec.prior_kind is None


@pytest.mark.parametrize("name", ["tv-conditional", "posterior-marginal", "map-", "map-joint", "MAP", ""])
def test_a_name_outside_the_list_is_refused_with_the_list(name):
    with pytest.raises(PAReconError, match="unknown method .*map-conditional"):
        parse_method(name)


@pytest.mark.parametrize("spec, conditional, message", [
    ("map", False, None), ("map", True, None), ("map-marginal", False, None), ("posterior", True, None),
    ("map-conditional", False, "needs a conditional prior, not a marginal one"),
    ("map_latent-marginal", True, "needs a marginal prior, not a conditional one"),
    ("posterior", False, "needs a conditional prior, not a marginal one"),
    ("cgls", True, "takes no prior"),
])
def test_the_prior_kind_check(spec, conditional, message):
    if message is None:
        check_prior_kind(parse_method(spec), conditional)
    else:
        with pytest.raises(PAReconError, match=message):
            check_prior_kind(parse_method(spec), conditional)


def test_one_noise_level_may_stand_for_every_scan(dense_op):
    case = gaussian_case(dense_op, [0.1, 0.1])
    problem = Problem(case.op, case.y, case.sigma, 1.0)
    one_number = reconstruct("cgls", replace(problem, sigma=0.1), {"n_iter": 5})
    torch.testing.assert_close(one_number.per_scan["chi2"], reconstruct("cgls", problem, {"n_iter": 5}).per_scan["chi2"])
    with pytest.raises(PAReconError, match=r"expected a number or shape \(2,\)") as err:
        reconstruct("cgls", replace(problem, sigma=torch.ones(3)))
    assert err.value.field == "sigma"
    with pytest.raises(PAReconError, match="expected a torch tensor") as err:
        reconstruct("bp", replace(problem, y=case.y.numpy()))
    assert err.value.field == "y"
