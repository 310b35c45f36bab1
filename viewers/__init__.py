"""What a person looks at: mask overlays, heat-maps, contact sheets, the report and the web viewer."""
