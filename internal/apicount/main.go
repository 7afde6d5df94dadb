// Command apicount counts the exported names of the module's public packages,
// the way issue 18 counted them: exported top-level declarations (each name of
// a const, var or type spec, each function) and exported methods of exported
// types (interface methods included), from non-test files; exported struct
// fields of exported types are counted apart. Packages under internal/,
// examples/, commands (package main) and other modules (bench/) are not
// public API.
//
//	go run ./internal/apicount          # a table per package and the total
//	go run ./internal/apicount -names   # every name, one per line
//	go run ./internal/apicount -undoc   # exported names without a doc comment (exit 1 if any)
package main

import (
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	root := flag.String("root", ".", "module root")
	names := flag.Bool("names", false, "print every counted name")
	undoc := flag.Bool("undoc", false, "list exported names without a doc comment, exit 1 if any")
	flag.Parse()
	pkgs, err := count(*root)
	if err != nil {
		fmt.Fprintln(os.Stderr, "apicount:", err)
		os.Exit(1)
	}
	dirs := make([]string, 0, len(pkgs))
	for d := range pkgs {
		dirs = append(dirs, d)
	}
	sort.Strings(dirs)
	var total, fields int
	fmt.Printf("%-22s %6s %7s\n", "package", "names", "fields")
	for _, d := range dirs {
		p := pkgs[d]
		fmt.Printf("%-22s %6d %7d\n", d, len(p.names), len(p.fields))
		total += len(p.names)
		fields += len(p.fields)
		if *names {
			for _, n := range p.names {
				fmt.Printf("    %s\n", n)
			}
		}
	}
	fmt.Printf("%-22s %6d %7d\n", "total", total, fields)
	if *undoc {
		n := 0
		for _, d := range dirs {
			for _, u := range pkgs[d].undoc {
				fmt.Printf("undocumented: %s.%s\n", d, u)
				n++
			}
		}
		if n > 0 {
			os.Exit(1)
		}
	}
}

type pkg struct{ names, fields, undoc []string }

// count walks root and returns, per public package directory, its exported
// names and exported fields.
func count(root string) (map[string]*pkg, error) {
	out := map[string]*pkg{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		first := strings.Split(filepath.ToSlash(rel), "/")[0]
		if rel != "." && (strings.HasPrefix(d.Name(), ".") || first == "internal" || first == "examples" || first == "testdata" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if rel != "." {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module (bench/)
			}
		}
		fset := token.NewFileSet()
		parsed, err := parser.ParseDir(fset, path, func(fi fs.FileInfo) bool {
			return !strings.HasSuffix(fi.Name(), "_test.go")
		}, parser.SkipObjectResolution|parser.ParseComments)
		if err != nil {
			return err
		}
		for name, p := range parsed {
			if name == "main" {
				continue
			}
			out[filepath.ToSlash(rel)] = collect(p)
		}
		return nil
	})
	return out, err
}

// collect lists the exported names and fields of one package.
func collect(p *ast.Package) *pkg {
	r := &pkg{}
	exportedType := map[string]bool{}
	for _, f := range p.Files {
		for _, decl := range f.Decls {
			if g, ok := decl.(*ast.GenDecl); ok {
				for _, s := range g.Specs {
					if ts, ok := s.(*ast.TypeSpec); ok && ts.Name.IsExported() {
						exportedType[ts.Name.Name] = true
					}
				}
			}
		}
	}
	for _, f := range p.Files {
		for _, decl := range f.Decls {
			switch d := decl.(type) {
			case *ast.FuncDecl:
				if !d.Name.IsExported() {
					continue
				}
				name := d.Name.Name
				if d.Recv != nil {
					recv := recvName(d.Recv.List[0].Type)
					if !exportedType[recv] {
						continue
					}
					name = recv + "." + name
				}
				r.names = append(r.names, name)
				if d.Doc == nil {
					r.undoc = append(r.undoc, name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								r.names = append(r.names, n.Name)
								if s.Doc == nil && s.Comment == nil && d.Doc == nil {
									r.undoc = append(r.undoc, n.Name)
								}
							}
						}
					case *ast.TypeSpec:
						if !s.Name.IsExported() {
							continue
						}
						r.names = append(r.names, s.Name.Name)
						if s.Doc == nil && d.Doc == nil {
							r.undoc = append(r.undoc, s.Name.Name)
						}
						switch t := s.Type.(type) {
						case *ast.StructType:
							for _, fl := range t.Fields.List {
								for _, n := range fl.Names {
									if n.IsExported() {
										r.fields = append(r.fields, s.Name.Name+"."+n.Name)
									}
								}
							}
						case *ast.InterfaceType:
							for _, m := range t.Methods.List {
								for _, n := range m.Names {
									if n.IsExported() {
										r.names = append(r.names, s.Name.Name+"."+n.Name)
									}
								}
							}
						}
					}
				}
			}
		}
	}
	sort.Strings(r.names)
	sort.Strings(r.fields)
	return r
}

// recvName is the type name of a method's receiver (T, *T, T[P], *T[P]).
func recvName(e ast.Expr) string {
	for {
		switch t := e.(type) {
		case *ast.StarExpr:
			e = t.X
		case *ast.IndexExpr:
			e = t.X
		case *ast.IndexListExpr:
			e = t.X
		case *ast.Ident:
			return t.Name
		default:
			return ""
		}
	}
}
