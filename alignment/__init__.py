"""Alignment theory on bandits and tabular models: solvers and problem generators (leaf package: jax, optax,
numpy/scipy and the ratelab core).

Modules: ``bandits`` (preferences, the KL-regularised optimum, small exact solvers), ``preferences`` (RLHF vs
preference-matching RLHF, Xiao et al. 2024), ``dpo`` (DPO vs RMB-PO vs RMB-PO+ on a linear contextual bandit, Li,
Xu and Yu 2023), ``remax`` (ReMax on a token-by-token generation tree, Li et al. 2023), ``forgetting`` (sequential vs
joint SFT and DPO, Fernando et al. 2024), ``unlearning`` (NGDiff vs gradient difference, Bu et al. 2024).
"""
