"""Score calibration (Platt, temperature): fitting, metrics (ECE, Brier), calibrated exports."""
