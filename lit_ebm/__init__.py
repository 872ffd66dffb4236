"""lit_ebm: adversarial training of energy-based models against density-evaluable generators.

Finn, Christiano, Abbeel & Levine (2016), "A Connection Between Generative Adversarial Networks,
Inverse Reinforcement Learning, and Energy-Based Models", arXiv:1611.03852.
"""

__version__ = "0.1.0"
