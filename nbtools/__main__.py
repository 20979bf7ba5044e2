from nbtools.cli import main

raise SystemExit(main())
