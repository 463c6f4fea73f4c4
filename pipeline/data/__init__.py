"""Input data shared by stages and apps: image decoding, preprocessing per input format, the bundled sample photos.
"""
