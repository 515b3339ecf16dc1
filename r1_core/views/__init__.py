"""Dynamic view selection: an online keyframe bank and request-aware selection of the views
the model sees (3D-R1's dynamic view selection, on real RGB-D keyframes).

    from r1_core.views import BankConfig, KeyframeBank, SelectorConfig, make_selector
    bank = KeyframeBank(BankConfig())
    bank.offer(color, depth, K, T_map_optical, stamp)      # fed by the fusion stream
    selector = make_selector(bank, SelectorConfig())       # dynamic | uniform | random
    views = selector.select_views(query, scene_encoding, k=4)   # r1_core.service.ViewProvider

Modules: bank (keyframes), vocab (request words), relevance (targets, proposal and CLIP
relevance), select (utility, greedy top-k, baselines, learnable weights), evaluate (synthetic
walk-through ground truth and hit rates), fit (weight fitting), cli (`r1 views …`).
Settings: config/views.yaml (sections bank, selector, fit).
"""
from r1_core.views.bank import BankConfig, BankSnapshot, Keyframe, KeyframeBank
from r1_core.views.select import (DynamicSelector, RandomSelector, SelectorConfig, UniformSelector,
                                  ViewScorerWeights, make_selector)

__all__ = ["BankConfig", "BankSnapshot", "Keyframe", "KeyframeBank", "DynamicSelector", "RandomSelector",
           "SelectorConfig", "UniformSelector", "ViewScorerWeights", "make_selector"]
