"""One run: its configuration (`config`), its folder (`run_folder`), the trainer (`trainer`), the
untrained floors and ceilings (`floors`) and where runs execute (`executors`)."""
