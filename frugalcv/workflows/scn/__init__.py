"""SCN (spatial context networks, dissertation Ch. 5): pretrain, train and evaluate stages."""
