"""Calibrated exit: replay exit rules over recorded signals and certify their accuracy risk."""
