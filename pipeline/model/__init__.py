"""The PyTorch SG-Former (timm-style: parts before the whole, variants as data) and checkpoint reading. The fused
IAM implementation is looked up through ``pipeline.iam``, never compiled or loaded at import time.
"""
