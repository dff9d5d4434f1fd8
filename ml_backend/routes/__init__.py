"""The HTTP routes, one router per concern: `protocol` (what Label Studio calls) and `status`
(what people open); `deps` holds what they share. `ml_backend.server` assembles them."""
