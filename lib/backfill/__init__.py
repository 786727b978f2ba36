"""Volatility-surface backfill: a conditional VAE with LSTM memory and a quantile decoder,
trained with a 4-phase curriculum, judged against baselines behind go/no-go gates."""
__version__ = "0.1.0"
