from methodo.cli import main

raise SystemExit(main())
