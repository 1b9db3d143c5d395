// Command glua runs an ArgoCD resource-customization Lua script (health.lua, discovery.lua or
// action.lua) the way ArgoCD does: gopher-lua with only the package, base and table libraries plus
// a safe `os` (time, date) available through require("os"), the resource as the global `obj`, and
// the returned table encoded to JSON with layeh.com/gopher-json (ArgoCD's encoder).
//
// Usage: glua SCRIPT.lua < object.json   (prints the returned table as JSON on stdout)
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: glua SCRIPT.lua < object.json")
		os.Exit(2)
	}
	out, err := run(os.Args[1], os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "glua:", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}

func run(scriptPath string, objJSON io.Reader) ([]byte, error) {
	script, err := os.ReadFile(scriptPath)
	if err != nil {
		return nil, err
	}
	var obj interface{}
	if err := json.NewDecoder(objJSON).Decode(&obj); err != nil {
		return nil, fmt.Errorf("object is not JSON: %w", err)
	}
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(open), Protect: true}, lua.LString(name)); err != nil {
			return nil, err
		}
	}
	l.PreloadModule(lua.OsLibName, safeOsLoader)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", decodeValue(l, obj))
	if err := l.DoString(string(script)); err != nil {
		return nil, err
	}
	ret := l.Get(-1)
	if ret.Type() != lua.LTTable {
		return nil, fmt.Errorf("expect table output from Lua script, not %s", ret.Type())
	}
	return luajson.Encode(ret)
}

// decodeValue turns decoded JSON into Lua values as ArgoCD's util/lua does.
func decodeValue(l *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []interface{}:
		arr := l.CreateTable(len(v), 0)
		for _, item := range v {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]interface{}:
		tbl := l.CreateTable(0, len(v))
		for key, item := range v {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	}
	return lua.LNil
}

// safeOsLoader exposes only os.time() and os.date(fmt), like ArgoCD's safe os library.
func safeOsLoader(l *lua.LState) int {
	mod := l.SetFuncs(l.NewTable(), map[string]lua.LGFunction{
		"time": func(l *lua.LState) int {
			l.Push(lua.LNumber(time.Now().Unix()))
			return 1
		},
		"date": func(l *lua.LState) int {
			format := l.OptString(1, "%c")
			t := time.Now()
			if strings.HasPrefix(format, "!") {
				t, format = t.UTC(), format[1:]
			}
			l.Push(lua.LString(strftime(t, format)))
			return 1
		},
	})
	l.Push(mod)
	return 1
}

var strftimeLayouts = map[byte]string{
	'Y': "2006", 'm': "01", 'd': "02", 'H': "15", 'M': "04", 'S': "05",
	'X': "15:04:05", 'F': "2006-01-02", 'z': "-0700", 'Z': "MST", 'c': "02 Jan 06 15:04 MST",
}

func strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		if format[i] == '%' && i+1 < len(format) {
			if layout, ok := strftimeLayouts[format[i+1]]; ok {
				b.WriteString(t.Format(layout))
				i++
				continue
			}
		}
		b.WriteByte(format[i])
	}
	return b.String()
}
