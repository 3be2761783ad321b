from recserve.cli import main

raise SystemExit(main())
