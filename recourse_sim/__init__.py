"""recourse_sim: batched simulation of the endogenous dynamics of algorithmic recourse (Altmeyer et al., SaTML 2023)."""
