"""What a person sees: progress lines and bars, plots, and text formatting."""
