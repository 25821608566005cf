from bgeflow.cli import main

raise SystemExit(main())
