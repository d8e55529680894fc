"""MMG-Vid on inputs small enough to work out by hand (the arithmetic is in the comments), and
every shared kernel of ``scores.py`` against an independent plain-Python formula.

Both forms (``select_tokens`` and ``PruningGraph``) must give the hand-derived answer, so a bug in
a kernel or in ``keep_count`` that both share cannot hide behind their agreement.
"""
import math

import pytest
import torch

from mmg_export import MMGConfig, PruningGraph, select_tokens
from mmg_export.prune import scores
from mmg_export.prune.config import keep_count
from mmg_export.prune.reference import allocate
from mmg_export.eval.synthetic import make_video, new_shot

A, C, G = [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]  # unit vectors: A.C = 0, A.G = 0.6, C.G = 0.8


def both_forms(video: torch.Tensor, ratio: float, config: MMGConfig = MMGConfig()) -> list[int]:
    """The reference's kept indices, after checking that the graph keeps the same."""
    selection = select_tokens(video, ratio, config)
    _, graph_indices = PruningGraph(*video.shape, ratio=ratio, config=config)(video)
    assert graph_indices.tolist() == selection.indices.tolist()
    return selection.indices.tolist()


# A static pair of frames [A, C, G], [A, C, G]; K = floor(0.5 * 6 + 0.5) = 3 (3.5 -> 3).
# One segment (T = 2 never cuts: the only similarity is its own median), equal weights:
# shares 1.5, 1.5 -> floors 1, 1, the leftover unit to frame 0 -> budgets [2, 1].
# Rounds: round 1 targets floor(2/2) = 1 and floor(1/2) = 0, round 2 targets 2 and 1.
# Round 1, frame 0 (nothing covered): gain(j) = sum of positive cosines to the tokens of frames 0 and 1:
#   A: (1 + 0 + 0.6) * 2 = 3.2, C: (0 + 1 + 0.8) * 2 = 3.6, G: (0.6 + 0.8 + 1) * 2 = 4.8 -> G is the peak.
# Coverage then: frame 0 [A.G, C.G, 1] = [0.6, 0.8, 1]; carried to frame 1 (link 1 to its copy): the same.
# Round 2, frame 0: gain(A) = (1 - 0.6) in frame 0 + (1 - 0.6) in frame 1 = 0.8, gain(C) = 0.2 + 0.2 = 0.4;
#   peak scores gain * squared distance to a better candidate: A 0.8 * 4 (best), C 0.4 * |A - C|^2 = 0.8 -> A.
# Coverage: frame 0 [1, 0.8, 1], frame 1 the same through the links.
# Round 2, frame 1: A and G add nothing; C adds (1 - 0.8) in frame 1 + (1 - 0.8) in frame 0 = 0.4 -> C (index 4).
STATIC_PAIR = torch.tensor([[A, C, G], [A, C, G]])


def test_default_keeps_in_the_second_frame_what_the_first_lacks():
    assert both_forms(STATIC_PAIR, 0.5) == [0, 2, 4]


def test_without_chain_steps_the_same_place_still_counts():
    # chain_steps=0: before frame 1 picks, its coverage is only what frame 0 kept at the same places:
    # A (kept) covers A: 1, C (dropped) nothing: 0, G (kept) covers G: 1 -> [1, 0, 1]; frame 0 [1, 0.8, 1].
    # Gains: A adds nothing; C adds 1 in frame 1 + (1 - 0.8) in frame 0 = 1.2; G adds 0.8 (to C) -> C (index 4)
    assert both_forms(STATIC_PAIR, 0.5, MMGConfig(chain_steps=0)) == [0, 2, 4]


# The pair shifted by one place: [A, C, G], [G, A, C]. Frame 0 picks as in STATIC_PAIR (G, then A: gains
# A 0.4 + 1.6 = 2.0 against C 0.2 + 1.0 = 1.2). Before frame 1 picks, the same place gives it only
# [G.A, 0, C.G] = [0.6, 0, 0.8] (its A and C sit where frame 0 has a dropped C and a kept G).
SHIFTED_PAIR = torch.tensor([[A, C, G], [G, A, C]])


def test_the_chain_finds_what_moved_and_without_it_the_second_frame_repeats_the_first():
    # default: the chain carries frame 0's coverage [1, 0.8, 1] through the links to the copies: frame 1
    # [1, 1, 0.8]; only C adds anything ((1 - 0.8) here and in frame 0) -> C (index 5)
    assert both_forms(SHIFTED_PAIR, 0.5) == [0, 2, 5]
    # chain_steps=0: gains G (1 - 0.6) + 0.6 = 1.0 and A 1.0 tie, C 0.2 + 0.2 + 0.2 = 0.6; the tie goes
    # to the lower index: G (index 3), a copy of the G that frame 0 keeps
    assert both_forms(SHIFTED_PAIR, 0.5, MMGConfig(chain_steps=0)) == [0, 2, 3]


def test_frames_picking_together_pick_the_same_content():
    # stride=1: in round 2 frames 0 and 1 pick at once from the same coverage [0.6, 0.8, 1]: both take A
    # (frame 1: gain(A) = 0.4 + 0.4 = 0.8 beats C's 0.4) -> index 3, a copy of the A kept in frame 0
    assert both_forms(STATIC_PAIR, 0.5, MMGConfig(stride=1)) == [0, 2, 3]


def test_merge_averages_dropped_tokens_into_the_nearest_kept_token_of_the_frame():
    # kept [A, G | C]; frame 0 drops C, nearer to G (0.8) than to A (0): G -> (G + C) / 2 = (0.3, 0.9);
    # frame 1 drops A and G, its only kept token is C: (A + G + C) / 3 = (1.6 / 3, 1.8 / 3)
    selection = select_tokens(STATIC_PAIR, 0.5, MMGConfig(merge=True))
    expected = torch.tensor([A, [0.3, 0.9], [1.6 / 3, 0.6]])
    torch.testing.assert_close(selection.features, expected)
    kept_features, _ = PruningGraph(2, 3, 2, 0.5, MMGConfig(merge=True))(STATIC_PAIR)
    torch.testing.assert_close(kept_features, expected)


def test_a_duplicated_token_ties_and_the_lower_index_is_kept():
    # Frame 0 [A, A, C] (tokens 0 and 1 are the same), frame 1 [A, C, G]; K = 3, budgets [2, 1].
    # Round 1, frame 0: gains: token 0 = token 1 = (1 + 1 + 0) + (1 + 0 + 0.6) = 3.6, token 2 = 1 + 1.8 = 2.8;
    #   equal quantised gains -> the key puts token 0 first; token 1's squared distance to it is 0 -> score 0.
    # Round 2, frame 0: both A's are covered; token 2 (C) adds (1 - 0) in frame 0 + ... -> kept: 0, 2.
    # Frame 1: C is covered by frame 0's C through the link, A likewise; G adds (1 - 0.8) -> index 5.
    video = torch.tensor([[A, A, C], [A, C, G]])
    assert both_forms(video, 0.5) == [0, 2, 5]
    # all tokens of a frame identical: every pick is a tie, the lowest indices win in both frames
    assert both_forms(torch.tensor([[A, A, A], [C, C, C]]), 0.5) == [0, 1, 3]


NEW_SHOT = new_shot()  # frames 0-3 repeat two tokens, frame 4 is a new shot: see its docstring


def test_marginal_budget_gives_a_new_shot_tokens_where_an_equal_split_does_not():
    marginal = select_tokens(NEW_SHOT, 0.3)
    assert marginal.segment_of_frame.tolist() == [0, 0, 0, 0, 1]
    assert marginal.budget_per_frame.tolist() == [1, 1, 0, 0, 1]
    uniform = select_tokens(NEW_SHOT, 0.3, MMGConfig(budget="uniform"))
    assert uniform.budget_per_frame.tolist() == [1, 1, 1, 0, 0]
    # Round 1 targets floor(1 / 2) = 0 everywhere; round 2: frame 0 (group 0) keeps e1 (lower index of a
    # tie), frame 1 (group 1) the token frame 0 lacks (e2: its e1 is covered through the link), frame 4 e3.
    assert both_forms(NEW_SHOT, 0.3) == [0, 3, 8]
    # uniform, frame 2 (group 2) picks last: frame 0's e1 and frame 1's e2 cover every e1 and e2 of the
    # segment at their places, so both gains are 0; the tie goes to the lower index: e1 -> index 2 * 2 = 4
    assert both_forms(NEW_SHOT, 0.3, MMGConfig(budget="uniform")) == [0, 3, 4]


@pytest.mark.parametrize("tokens,ratio,expected", [
    (10, 0.25, 3),  # 2.5 -> 3 (halves round up)
    (6, 0.25, 2),  # 1.5 -> 2
    (100, 0.125, 13),  # 12.5 -> 13 (Python's round would give 12, truncation 12)
    (6272, 0.15, 941),  # 940.8 -> 941
    (20, 0.15, 3),  # 0.15 * 20 = 3.0000000000000004 -> 3
    (4, 0.1, 1),  # 0.4 -> 0, at least one token
    (3, 0.5, 2),  # 1.5 -> 2
])
def test_keep_count_rounds_halves_up(tokens, ratio, expected):
    assert keep_count(tokens, ratio) == expected


@pytest.mark.parametrize("frames,tokens,ratio", [(5, 9, 0.3), (1, 5, 0.5), (5, 9, 0.1)])
def test_both_forms_keep_exactly_k_at_half_way_budgets(frames, tokens, ratio):
    # 13.5 -> 14, 2.5 -> 3, 4.5 -> 5
    expected = math.floor(ratio * frames * tokens + 0.5)
    assert len(both_forms(make_video("random", 0, frames, tokens, 4), ratio)) == expected


def test_allocate_uses_exact_largest_remainders():
    # 7 over weights 1, 1, 1: shares 7/3 -> floors 2, 2, 2; the unit to the lowest index
    assert allocate(7, [1, 1, 1], cap=5) == [3, 2, 2]
    # 10 over 8, 1, 1 with cap 4: 8 -> capped, the rest 6 shares 3, 3
    assert allocate(10, [8, 1, 1], cap=4) == [4, 3, 3]


# ---- the shared kernels against independent formulas ---------------------------------------


def unit(vector):
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm else [0.0] * len(vector)


def cosine(u, v):
    return sum(a * b for a, b in zip(unit(u), unit(v)))


def test_token_stats_match_direct_cosines():
    video = make_video("drifting", 3, 4, 5, 3) * 7.0
    stats = scores.token_stats(video, MMGConfig())
    rows = video.tolist()
    for t in range(4):
        for i in range(5):
            for j in range(5):
                assert stats.gram[t, i, j] == pytest.approx(cosine(rows[t][i], rows[t][j]), abs=1e-5)
                expected = cosine(rows[t][i], rows[t - 1][j]) if t else 0.0
                assert stats.previous[t, i, j] == pytest.approx(expected, abs=1e-5)
            for s in range(4):
                assert stats.same_position[t, i, s] == pytest.approx(cosine(rows[t][i], rows[s][i]), abs=1e-5)
    for t in range(3):
        mean = [sum(unit(token)[d] for token in rows[t]) for d in range(3)]
        following = [sum(unit(token)[d] for token in rows[t + 1]) for d in range(3)]
        assert stats.frame_similarity[t] == pytest.approx(cosine(mean, following), abs=1e-5)
    for t in range(1, 4):
        unique = [max(0.0, 1.0 - max(cosine(rows[t][i], rows[t - 1][j]) for j in range(5))) for i in range(5)]
        assert stats.novelty_level[t] == round(64 * (0.1 + 0.9 * sum(unique) / 5))


def test_token_stats_survive_huge_and_tiny_magnitudes():
    video = make_video("random", 1, 3, 4, 4)
    reference = scores.token_stats(video, MMGConfig())
    for factor in (1e30, 1e-30):
        scaled = scores.token_stats(video * factor, MMGConfig())
        torch.testing.assert_close(scaled.gram, reference.gram, atol=1e-5, rtol=0)


def small_band():
    video = make_video("drifting", 2, 3, 4, 3)
    stats = scores.token_stats(video, MMGConfig())
    starts = torch.tensor([True, False, True])  # frame 2 starts a segment: no link between 1 and 2
    return stats, starts, scores.band(stats, starts)


def link(stats, starts, t, i, s, j):
    """Similarity of token i of frame t to token j of the adjacent frame s, clamped, 0 across a cut."""
    later, earlier = (t, s) if t > s else (s, t)
    if starts[later]:
        return 0.0
    value = stats.previous[later, i, j] if later == t else stats.previous[later, j, i]
    return max(0.0, float(value))


def neighbours(frames, t):
    return [s for s in (t - 1, t + 1) if 0 <= s < frames]


def same_place(stats, starts, t, i, s):
    """Similarity of token i of frame t to token i of frame s, clamped, 0 with a cut between them."""
    if any(starts[f] for f in range(min(t, s) + 1, max(t, s) + 1)):
        return 0.0
    return max(0.0, float(stats.same_position[t, i, s]))


def test_coverage_matches_the_chain_formula():
    stats, starts, band = small_band()
    frames, tokens = 3, 4
    kept = torch.zeros(frames, tokens, dtype=torch.bool)
    kept[0, 1] = kept[1, 3] = kept[2, 0] = True
    carried = torch.rand(frames, tokens, generator=torch.Generator().manual_seed(0)) * 0.3

    def direct(t, i):  # the kept tokens of the frame itself and at the same place in its segment
        own = [float(stats.gram[t, i, j]) for j in range(tokens) if kept[t, j]]
        return max(own + [same_place(stats, starts, t, i, s) for s in range(frames) if kept[s, i]] + [0.0])

    expected = carried.tolist()
    for _ in range(2):  # each step: the kept tokens, then one frame further along the links
        previous = [row[:] for row in expected]
        for t in range(frames):
            for i in range(tokens):
                carried_in = max([link(stats, starts, t, i, s, j) * previous[s][j]
                                  for s in neighbours(frames, t) for j in range(tokens)] + [0.0])
                expected[t][i] = max(previous[t][i], direct(t, i), carried_in)
    torch.testing.assert_close(scores.coverage(band, kept, carried, 2), torch.tensor(expected))
    # no steps: only the kept tokens of the frame itself and at the same place
    direct_only = [[max(direct(t, i), carried[t, i].item()) for i in range(tokens)] for t in range(frames)]
    torch.testing.assert_close(scores.coverage(band, kept, carried, 0), torch.tensor(direct_only))
    # the same place counts within the segment (frame 0's token 1 for frame 1), not across the cut
    assert same_place(stats, starts, 1, 1, 0) > 0
    assert stats.same_position[1, 0, 2] > 0 and same_place(stats, starts, 1, 0, 2) == 0


@pytest.mark.parametrize("steps", [0, 1, 2])
@pytest.mark.parametrize("cut", [False, True])
def test_coverage_of_the_changed_frames_only_equals_recomputing_all(steps, cut):
    """The shortcut both forms take: once ``carried`` holds the kept tokens of every other frame,
    comparing again only the frames that kept tokens since gives the coverage of recomputing all
    (pinned to the chain formula above)."""
    stats, _, _ = small_band()
    band = scores.band(stats, torch.tensor([True, False, cut]))
    kept = torch.zeros(3, 4, dtype=torch.bool)
    everything = shortcut = torch.zeros(3, 4)
    for picks, changed in [([(0, 1), (2, 3)], slice(0, None, 2)), ([(1, 0)], slice(1, None, 2)),
                           ([(0, 2), (1, 3), (2, 0)], slice(None)), ([(2, 1)], slice(2, 3))]:
        for frame, token in picks:
            kept[frame, token] = True
        everything = scores.coverage(band, kept, everything, steps)
        shortcut = scores.coverage(band, kept, shortcut, steps, changed)
        assert torch.equal(everything, shortcut)
    assert everything.min() > 0  # every token got some coverage: the comparison was not of zeros


def test_picked_since_names_the_previous_group():
    assert scores.picked_since(1, 8, 3) == slice(0, None, 3)
    assert scores.picked_since(0, 8, 3) == slice(2, None, 3)  # a new round: the last group of the previous one
    assert scores.picked_since(0, 2, 3) == slice(None)  # group 2 of 2 frames is empty: recompute all
    assert scores.group_frames(2, 3) == slice(2, None, 3)


def test_marginal_gain_matches_the_facility_location_formula():
    stats, starts, band = small_band()
    cover = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    gain = scores.marginal_gain(band, cover)
    for t in range(3):
        for j in range(4):
            expected = sum(max(0.0, float(stats.gram[t, i, j]) - float(cover[t, i])) for i in range(4))
            expected += sum(max(0.0, link(stats, starts, s, i, t, j) - float(cover[s, i]))
                            for s in neighbours(3, t) for i in range(4))
            assert float(gain[t, j]) == pytest.approx(expected, abs=1e-5)


def test_peak_scores_by_hand():
    # one frame of three candidates, quantised gains 5, 3, 3 -> keys 5*3+2 = 17, 3*3+1 = 10, 3*3+0 = 9
    gain_q = torch.tensor([[5.0, 3.0, 3.0]])
    keys = scores.rank_keys(gain_q, torch.zeros(1, 3, dtype=torch.bool), -1.0)
    assert keys.tolist() == [[17.0, 10.0, 9.0]]
    squared = torch.tensor([[[0.0, 0.5, 2.0], [0.5, 0.0, 0.1], [2.0, 0.1, 0.0]]])
    # token 0: best, 4 * 5 = 20; token 1: nearest better is 0 at 0.5 -> 1.5; token 2: better 0 and 1, min 0.1 -> 0.3
    torch.testing.assert_close(scores.peak_scores(squared, keys, gain_q), torch.tensor([[20.0, 1.5, 0.3]]))
    # a kept token (key -1) is nobody's better candidate: token 1 is then the best (4 * 3)
    kept = torch.tensor([[True, False, False]])
    keys = scores.rank_keys(gain_q, kept, -1.0)
    assert keys.tolist() == [[-1.0, 10.0, 9.0]]
    assert scores.peak_scores(squared, keys, gain_q)[0, 1:].tolist() == pytest.approx([12.0, 0.3])


def test_quantise_rounds_half_to_even_and_key_levels_fit_float32():
    assert scores.quantise(torch.tensor([0.5, 1.5, 2.5, -0.5]) / 4, 4).tolist() == [0.0, 2.0, 2.0, -0.0]
    # P = 196: gains <= 588; 128 levels: (588 * 128 + 1) * 196 = 14,751,940 <= 2**24, 256 would be 29.5 M
    assert scores.key_levels(196, 588.0) == 128
    # scores <= 4 * 588 * 128 = 301,056, quantised * 0.25: at most 75,264, the largest quantised gain
    assert scores.pick_levels(196) == (128, 0.25)
    # few tokens: capped at 128 (a coarse grid is robust); many: fewer levels so that keys fit
    assert scores.pick_levels(5) == (128, 0.25)
    assert scores.pick_levels(729) == (8, 0.25)  # (3 * 729 * 8 + 1) * 729 = 12.76 M; 16 would be 25.5 M
    for tokens in (1, 5, 196, 729, 5000):
        levels = scores.key_levels(tokens, 3.0 * tokens)
        assert (3.0 * tokens * levels + 1) * tokens <= 2**24 < (3.0 * tokens * levels * 2 + 1) * tokens


def test_cut_threshold_by_hand():
    # median 0.98 on the 2**-12 grid is round(4014.08) = 4014; 4096 - 4014 = 82; factor 4: 4096 - 328 = 3768
    median = torch.tensor(4014.0)
    assert float(scores.cut_threshold(median, median, MMGConfig(cut_factor=4.0))) == 3768.0
    # factor 2.5: 82 * 2.5 = 205 -> 3891; factor 1: 4014, capped by tau = 0.95 -> round(3891.2) = 3891
    assert float(scores.cut_threshold(median, median, MMGConfig(cut_factor=2.5))) == 3891.0
    assert float(scores.cut_threshold(median, median, MMGConfig(cut_factor=1.0))) == 3891.0
    # a half step rounds to even: median 4055 (0.99), 41 * 1.5 = 61.5 -> 62 -> 4034
    median = torch.tensor(4055.0)
    assert float(scores.cut_threshold(median, median, MMGConfig(cut_factor=1.5, tau=1.0))) == 4034.0


def test_frame_weight_and_its_scale_by_hand():
    # 6272 tokens: max weight (2**24 - 1) // 12544 = 1337; scale 1337 / sqrt(64) = 167.125
    assert scores.weight_scale(6272, 64) == (1337, 167.125)
    # a segment of 2 frames with levels 64 + 10: sqrt(74 / 2) = 6.0828 -> round(1016.59) = 1017, at least 1
    weight = scores.frame_weight(torch.tensor([74.0, 0.0]), torch.tensor([2.0, 3.0]), 167.125)
    assert weight.tolist() == [1017.0, 1.0]


def test_merge_keys_order_kept_tokens_by_similarity_then_index():
    gram = torch.tensor([[[1.0, 0.5, 0.5], [0.5, 1.0, -1.0], [0.5, -1.0, 1.0]]])
    kept = torch.tensor([[False, True, True]])
    keys = scores.merge_keys(gram, kept)
    levels = scores.key_levels(3, 2.0)
    # row 0: cos 0.5 to both kept tokens -> equal quantised value 1.5 * levels; token 1 (reverse index 1) wins
    assert keys[0, 0].tolist() == [-1.0, 1.5 * levels * 3 + 1, 1.5 * levels * 3 + 0]
    assert int(keys[0, 0].argmax()) == 1


def test_band_holds_the_squared_distances_of_unit_tokens():
    stats, _, band = small_band()
    torch.testing.assert_close(band.squared_distance, (2.0 - 2.0 * stats.gram).clamp(min=0.0))
    video = torch.tensor([[A, C, G]])
    band = scores.band(scores.token_stats(video, MMGConfig()), torch.tensor([True]))
    # |A - C|^2 = 2, |A - G|^2 = 0.4^2 + 0.8^2 = 0.8, |C - G|^2 = 0.6^2 + 0.2^2 = 0.4
    torch.testing.assert_close(band.squared_distance[0], torch.tensor([[0.0, 2.0, 0.8], [2.0, 0.0, 0.4],
                                                                        [0.8, 0.4, 0.0]]), atol=1e-6, rtol=0)


def test_one_coverage_step_carries_coverage_one_frame():
    stats, starts, band = small_band()
    kept = torch.zeros(3, 4, dtype=torch.bool)
    kept[0, 2] = True
    cover = scores.coverage(band, kept, torch.zeros(3, 4), 1)
    # one step: frame 0 is covered by its kept token; frame 1 by what was carried in (nothing yet) and at
    # the kept token's place (its own token 2)
    torch.testing.assert_close(cover[0], stats.gram[0, :, 2].clamp(min=0.0))
    assert cover[1].tolist() == [0.0, 0.0, pytest.approx(float(stats.same_position[1, 2, 0])), 0.0]
    assert cover[1, 2] > 0 and cover[2].abs().sum() == 0
    two = scores.coverage(band, kept, torch.zeros(3, 4), 2)
    assert float(two[1].sum()) > 0 and two[2].abs().sum() == 0  # frame 2 starts a segment: no link


def test_weight_scale_keeps_budget_products_exact():
    # 1024 tokens: (2**24 - 1) // 2048 = 8191 (not 8192: products must stay below 2**24)
    assert scores.weight_scale(1024, 64)[0] == 8191
    video = make_video("cuts", 0, 32, 196, 8)
    stats = scores.token_stats(video, MMGConfig())
    graph = PruningGraph(32, 196, 8, 0.25)
    weights = graph.frame_weights(stats, graph.segment_starts(stats.frame_similarity))
    assert graph.weight_scale == scores.weight_scale(32 * 196, 64)[1] == 167.125
    assert 196 * float(weights.sum()) < 2**24 and float(weights.max()) <= 1337


def test_merge_goes_on_past_a_frame_that_keeps_nothing():
    # NEW_SHOT at 0.3 keeps [e1 | e2 | - | - | e3] (budgets [1, 1, 0, 0, 1]); frame 4 drops e4 into e3
    selection = select_tokens(NEW_SHOT, 0.3, MMGConfig(merge=True))
    assert selection.indices.tolist() == [0, 3, 8]
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5]])
    torch.testing.assert_close(selection.features, expected)
    kept_features, _ = PruningGraph(5, 2, 4, 0.3, MMGConfig(merge=True))(NEW_SHOT)
    torch.testing.assert_close(kept_features, expected)


def test_the_graph_runs_on_any_device_it_is_moved_to():
    """Every tensor the graph creates follows its input's device (checked on the meta device)."""
    for config in (MMGConfig(merge=True), MMGConfig(budget="uniform")):
        graph = PruningGraph(4, 6, 3, 0.5, config).to("meta")
        kept_features, kept_indices = graph(torch.empty(4, 6, 3, device="meta"))
        assert kept_features.device.type == kept_indices.device.type == "meta"
        assert kept_indices.shape == (12,) and kept_indices.dtype == torch.int64
    assert PruningGraph(4, 6, 3).state_dict() == {}  # index tables are not weights: nothing to load or save
