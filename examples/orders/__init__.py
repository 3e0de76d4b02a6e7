"""An order-processing handler app: validate, charge, fulfill, notify; refund to compensate."""
