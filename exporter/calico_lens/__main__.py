from calico_lens.cli import main

raise SystemExit(main())
