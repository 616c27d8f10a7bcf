"""Seeing the weighting: token views (views), the HTML report (visualisation), ``nlft saliency``,
``nlft locate`` (localization) and ``nlft studio``.
"""
