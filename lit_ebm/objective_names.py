"""The names of what a run trains, decided here once: maximum likelihood or the adversarial EBM
of Finn et al. (2016), and the adversarial generator's objectives. No torch import, so that the
config schema reads them without loading a network."""

MAXIMUM_LIKELIHOOD = "mle"
ADVERSARIAL = "adversarial"
OBJECTIVES = (MAXIMUM_LIKELIHOOD, ADVERSARIAL)
GENERATOR_OBJECTIVES = ("reverse_kl", "hybrid", "forward_kl")
"""The paper's reverse KL (L_G), hybrid (L_G plus the data's NLL) and forward KL."""
