from imrs.cli import main

raise SystemExit(main())
