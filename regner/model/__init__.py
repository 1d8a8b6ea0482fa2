"""The span model: encoder, GlobalPointer head, loss, decoding and the fp32 numerics they share."""
