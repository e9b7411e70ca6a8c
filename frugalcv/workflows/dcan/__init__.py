"""DCAN: dual channel-wise alignment for unsupervised scene adaptation (stages in stages.py)"""
