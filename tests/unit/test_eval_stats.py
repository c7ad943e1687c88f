"""The evaluation's figures against hand-computed cases: the exact Poisson interval (closed forms
where they exist, published Garwood values elsewhere), the ratio interval and paired differences."""
import math

import pytest

from services.emulator.eval_stats import (death_rate, mean_ci, paired_difference, poisson_interval, ratio_ci,
                                          summarize_lives, t975)

POISSON = {
    # name: (count, lower, upper)
    "no deaths: upper = -ln(0.025) (closed form)": (0, 0.0, -math.log(0.025)),
    "one death: lower = -ln(0.975) (closed form)": (1, -math.log(0.975), 5.571643),
    "two deaths (Garwood table)": (2, 0.242209, 7.224688),
    "ten deaths (Garwood table)": (10, 4.795389, 18.390356),
    "a hundred deaths (scipy: chi2.ppf(0.025, 200) / 2, chi2.ppf(0.975, 202) / 2)": (100, 81.363991, 121.626794),
}


@pytest.mark.parametrize("name", POISSON)
def test_poisson_interval_against_hand_computed_cases(name):
    k, lo, hi = POISSON[name]
    got = poisson_interval(k)
    assert got == pytest.approx((lo, hi), rel=2e-6, abs=1e-9)


def test_the_upper_end_for_one_death_solves_its_equation():
    hi = poisson_interval(1)[1]
    assert math.exp(-hi) * (1 + hi) == pytest.approx(0.025, rel=1e-9)   # P(X <= 1 | hi) = 2.5%


def test_death_rate_per_10k_ticks_scales_the_count_interval_by_exposure():
    rate, lo, hi = death_rate(3, 30_000)
    k_lo, k_hi = 0.618672, 8.767273   # Garwood, 3 events
    assert (rate, lo, hi) == pytest.approx((1.0, k_lo / 3, k_hi / 3), rel=2e-6)
    rate, lo, hi = death_rate(0, 120_000)   # no death in 120k ticks: the rate is below ~0.31 per 10k
    assert rate == 0 and lo == 0 and hi == pytest.approx(-math.log(0.025) / 12, rel=1e-6)
    with pytest.raises(ValueError):
        poisson_interval(-1)


def test_t_quantile_is_close_to_the_table():
    for df, table, rel in ((2, 4.302653, 1e-2), (3, 3.182446, 2e-3), (5, 2.570582, 2e-4), (9, 2.262157, 1e-5),
                           (29, 2.045230, 1e-6), (1000, 1.962339, 1e-6)):
        assert t975(df) == pytest.approx(table, rel=rel)


def test_mean_and_paired_intervals_by_hand():
    assert mean_ci([1, 2, 3, 4, 5, 6]) == pytest.approx((3.5, t975(5) * math.sqrt(3.5) / math.sqrt(6)))
    a, b = [5, 7, 9, 11, 13, 15], [4, 6, 8, 10, 12, 14]
    assert paired_difference(a, b) == (1.0, 0.0)   # every start one point better: no doubt at all
    # far tighter than two independent intervals when the starts explain most of the spread
    a, b = [100, 2000, 5000, 800, 3000, 10000], [90, 1990, 4970, 820, 2950, 9900]
    diff, half = paired_difference(a, b)
    assert diff == pytest.approx(sum(x - y for x, y in zip(a, b)) / 6)
    assert half < mean_ci(a)[1] / 20
    with pytest.raises(ValueError):
        paired_difference([1, 2], [1])


def test_ratio_interval_by_hand():
    assert ratio_ci([10, 20, 30], [1, 2, 3], 1000) == (10_000.0, 0.0)   # every life scores at the same rate
    # R = 12 / 8 = 1.5; residuals y - R x = (0.5, -1, 0.5); se = sqrt(1.5 / (3 * 2)) / (8 / 3)
    rate, half = ratio_ci([2, 2, 8], [1, 2, 5])
    assert rate == 1.5 and half == pytest.approx(t975(2) * math.sqrt(1.5 / 6) / (8 / 3))
    assert math.isnan(ratio_ci([0], [0])[0])


def test_summary_of_lives():
    lives = [{"points": 1000, "ticks": 500, "capped": False, "start_level": 1, "level": 2},
             {"points": 3000, "ticks": 1000, "capped": True, "start_level": 1, "level": 3},
             {"points": 2000, "ticks": 500, "capped": False, "start_level": 13, "level": 13}]
    s = summarize_lives(lives)
    assert (s["lives"], s["mean"], s["deaths"], s["ticks"], s["capped"]) == (3, 2000.0, 2, 2000, 1)
    assert s["points_per_1k_ticks"] == 3000.0 and s["deaths_per_10k_ticks"] == 10.0
    assert s["levels_per_1k_ticks"] == 1.5   # 1 + 2 + 0 levels cleared in 2,000 ticks
    lo, hi = s["deaths_per_10k_ticks_ci95"]
    assert lo < 10 < hi


def test_report_rows_pair_each_policy_with_the_expert_or_the_first():
    from services.emulator.eval_report import suite_rows

    def lives(points, ticks):
        return [{"points": p, "ticks": t, "capped": t >= 4000, "start_level": 13, "level": 13}
                for p, t in zip(points, ticks)]
    by = {"net.pt": lives([900, 2100, 3000], [300, 900, 1200]), "expert": lives([1000, 2000, 3200], [400, 800, 1300]),
          "random": lives([100, 300, 200], [50, 90, 70])}
    rows = suite_rows(["net.pt", "expert", "random"], {"net.pt": 800_000}, {"net.pt": 0.0, "expert": 0.0,
                                                                             "random": 1.0}, by)
    net, expert, random = rows
    assert "paired" not in expert and net["paired"]["against"] == random["paired"]["against"] == "expert"
    assert net["paired"]["points_diff"] == round((-100 + 100 - 200) / 3, 1)
    assert net["paired"]["ticks_diff"] == round((-100 + 100 - 100) / 3, 1)
    assert net["frames"] == 800_000 and expert["frames"] is None and random["epsilon"] == 1.0
    assert net["scores"] == [900, 2100, 3000] and net["lives_detail"] == by["net.pt"]
    alone = suite_rows(["random", "net.pt"], {}, {"net.pt": 0.0, "random": 1.0}, by)
    assert "paired" not in alone[0] and alone[1]["paired"]["against"] == "random"


def test_no_op_offsets_do_not_repeat_within_31_lives():
    from services.emulator.evaluate import NOOP_STARTS, noop_starts
    for seed in range(20):
        offsets = noop_starts(seed, 31)
        assert sorted(offsets) == list(range(NOOP_STARTS)), "a deterministic policy would replay a repeated offset"
        assert noop_starts(seed, 12) == offsets[:12]
    assert noop_starts(1, 20) != noop_starts(2, 20)
    many = noop_starts(3, 70)   # beyond 31 lives each offset comes once per round
    assert sorted(many[:31]) == sorted(many[31:62]) == list(range(NOOP_STARTS))
