// Command mongod-ferretdb is the entry point of Hypersend's local MongoDB-wire image: it accepts
// what the operator's MongoDB StatefulSet gives the official mongo image and runs FerretDB on
// SQLite instead.
//
//   - args: `mongod` (optional) followed by mongod options; --bind_ip_all, --bind_ip, --port and
//     --dbpath are understood, anything else is refused rather than silently ignored;
//   - MONGO_INITDB_ROOT_USERNAME / MONGO_INITDB_ROOT_PASSWORD: when set, FerretDB's SCRAM
//     authentication is on and this user is created in the admin database on first start (the
//     official image's behaviour), so mongodb://user:password@host/?authSource=admin works and
//     wrong credentials are refused. Without them, no authentication (also as the official image).
//   - HYPERSEND_MONGO_APP_USERNAME / _PASSWORD / _DATABASE (with the root variables): the chat
//     pods' user, which the operator's init script creates with mongosh on the official image.
//     FerretDB v1 creates one user on first start and has no roles (any authenticated user may
//     do anything), so the user it creates is then this one, in its database
//     (mongodb://user:password@host/db?authSource=db), and no root user: nothing in this image
//     logs in as root.
//
// Data lives in --dbpath (default /data/db, one SQLite file per database), which is the only
// path written: the image runs with a read-only root filesystem as any non-root UID.
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

func main() {
	argv, env, err := translate(os.Args[1:], os.Environ())
	if err != nil {
		fmt.Fprintf(os.Stderr, "mongod-ferretdb: %s\n", err)
		os.Exit(2)
	}
	// FerretDB's command sits next to this one (/usr/local/bin in the image).
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mongod-ferretdb: %s\n", err)
		os.Exit(1)
	}
	ferretdb := filepath.Join(filepath.Dir(self), "ferretdb")
	if err := syscall.Exec(ferretdb, argv, env); err != nil {
		fmt.Fprintf(os.Stderr, "mongod-ferretdb: exec %s: %s\n", ferretdb, err)
		os.Exit(1)
	}
}

// translate turns mongod's arguments and environment into FerretDB's.
func translate(args, environ []string) ([]string, []string, error) {
	if len(args) > 0 && args[0] == "mongod" {
		args = args[1:]
	}
	host, port, dbpath := "127.0.0.1", "27017", "/data/db"
	for i := 0; i < len(args); i++ {
		name, value, inline := strings.Cut(args[i], "=")
		takeValue := func() (string, error) {
			if inline {
				return value, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%s needs a value", name)
			}
			i++
			return args[i], nil
		}
		var err error
		switch name {
		case "--bind_ip_all":
			host = "0.0.0.0"
		case "--bind_ip":
			var list string
			list, err = takeValue()
			host, _, _ = strings.Cut(list, ",")
		case "--port":
			port, err = takeValue()
		case "--dbpath":
			dbpath, err = takeValue()
		default:
			return nil, nil, fmt.Errorf("unsupported mongod option %q", args[i])
		}
		if err != nil {
			return nil, nil, err
		}
	}
	argv := []string{
		"ferretdb",
		"--handler=sqlite",
		"--sqlite-url=file:" + strings.TrimSuffix(dbpath, "/") + "/",
		"--state-dir=" + dbpath,
		"--listen-addr=" + net.JoinHostPort(host, port),
		"--debug-addr=-",
		"--telemetry=disable",
		"--log-level=info",
	}
	env := []string{"DO_NOT_TRACK=1"}
	var user, password, appUser, appPassword, appDatabase string
	database := "admin"
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		switch {
		case k == "MONGO_INITDB_ROOT_USERNAME":
			user = v
		case k == "MONGO_INITDB_ROOT_PASSWORD":
			password = v
		case k == "HYPERSEND_MONGO_APP_USERNAME":
			appUser = v
		case k == "HYPERSEND_MONGO_APP_PASSWORD":
			appPassword = v
		case k == "HYPERSEND_MONGO_APP_DATABASE":
			appDatabase = v
		case strings.HasPrefix(k, "FERRETDB_"), k == "DO_NOT_TRACK":
			// Only this entry point configures FerretDB.
		default:
			env = append(env, kv)
		}
	}
	if (user == "") != (password == "") {
		return nil, nil, fmt.Errorf("set both MONGO_INITDB_ROOT_USERNAME and MONGO_INITDB_ROOT_PASSWORD, or neither")
	}
	if (appUser == "") != (appPassword == "") || (appUser == "") != (appDatabase == "") {
		return nil, nil, fmt.Errorf("set all of HYPERSEND_MONGO_APP_USERNAME, _PASSWORD and _DATABASE, or none")
	}
	if appUser != "" && user == "" {
		return nil, nil, fmt.Errorf("HYPERSEND_MONGO_APP_* need MONGO_INITDB_ROOT_USERNAME and _PASSWORD (as on the official image)")
	}
	if appUser != "" {
		user, password, database = appUser, appPassword, appDatabase
	}
	if user != "" {
		// Through the environment rather than argv, so the password is not in the command line.
		env = append(env,
			"FERRETDB_TEST_ENABLE_NEW_AUTH=true",
			"FERRETDB_SETUP_DATABASE="+database,
			"FERRETDB_SETUP_USERNAME="+user,
			"FERRETDB_SETUP_PASSWORD="+password,
		)
	}
	return argv, env, nil
}
