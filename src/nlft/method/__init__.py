"""The NLFT method's maths: per-token log-probabilities (scoring), the token weighting and its clustering
(weighting, clustering) and the loss (loss). Pure functions of tensors: nothing here imports the rest of nlft.
"""
