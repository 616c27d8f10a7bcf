"""Models: loading weights and tokenizers (loading), the embedded models (mini, tiny) and text generation
back-ends (generation).
"""
