"""The research studies behind the course's choices (the lever tables, the fair CPT comparison, the loss's
speed, the SFT curve, the fitted-vector ceiling): each reruns the method under several settings."""
