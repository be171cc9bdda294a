"""What every room uses: settings, Redis clients and key names, the Lua loader, tracing, logs, metrics."""
