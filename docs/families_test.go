package docs_test

// Reading the metric families out of the exporter's production code, the
// way a maintainer would: every prometheus.NewDesc and every metric
// constructor (NewCounterVec, NewGaugeFunc, ...) in main.go, collector/ and
// internal/, type-checked, with the type of a NewDesc family taken from the
// calls that send it (newConstMetric(desc, prometheus.CounterValue, ...)).
// Descriptors reach those calls through variables, parameters, closures,
// return values, struct fields and slices; each of those is followed, and
// anything this reader cannot follow is an error naming the line, so a new
// way of declaring a family cannot slip past docs/metrics.md unseen.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
)

const (
	promPkg     = "github.com/prometheus/client_golang/prometheus"
	promautoPkg = "github.com/prometheus/client_golang/prometheus/promauto"
	versionPkg  = "github.com/prometheus/client_golang/prometheus/collectors/version"
)

// productionCode are the packages the exporter binary is built from (tests,
// the lab and the benchmarks are not).
var productionCode = []string{".", "./collector/...", "./internal/..."}

// codeFamily is one metric family as the code declares it.
type codeFamily struct {
	Name      string
	Type      string     // counter, gauge, histogram, summary or untyped
	LabelSets [][]string // one per declaration, in the code's order
	Files     []string   // repository-relative, sorted, unique
	decls     []token.Position
}

// A declaration of a family: a NewDesc call or a metric constructor.
type declaration struct {
	name   string
	labels []string
	pos    token.Position
	types  map[string]bool // for a NewDesc: the value types it is sent with
}

// code is what the doc is checked against.
type code struct {
	families map[string]*codeFamily
	packages map[string]*types.Package // by package name
	files    []string                  // the Go files read, absolute
	// problems are the declarations this reader could not follow, or that
	// are wrong (never sent, sent as two types), each naming its line.
	problems []error
}

// readCode loads and type-checks the packages matching patterns in the
// module rooted at root and returns their families by name. The error is
// for what stops the reading (go list, type errors); problems with single
// declarations are in code.problems.
func readCode(root string, patterns []string) (*code, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	pkgs, exports, err := goList(root, patterns)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		file, ok := exports[path]
		if !ok || file == "" {
			return nil, fmt.Errorf("no export data for %s", path)
		}
		return os.Open(file)
	})
	c := &code{families: map[string]*codeFamily{}, packages: map[string]*types.Package{}}
	var decls []*declaration
	for _, p := range pkgs {
		r, err := newPackageReader(root, fset, imp, p)
		if err != nil {
			return nil, err
		}
		if other, dup := c.packages[r.pkg.Name()]; dup {
			return nil, fmt.Errorf("two packages named %s (%s, %s): doc references would be ambiguous", r.pkg.Name(), other.Path(), r.pkg.Path())
		}
		c.packages[r.pkg.Name()] = r.pkg
		for _, f := range p.GoFiles {
			c.files = append(c.files, filepath.Join(p.Dir, f))
		}
		decls = append(decls, r.declarations()...)
		c.problems = append(c.problems, r.errs...)
	}
	for _, d := range decls {
		rel := filepath.ToSlash(d.pos.Filename)
		f := c.families[d.name]
		if f == nil {
			f = &codeFamily{Name: d.name}
			c.families[d.name] = f
		}
		f.decls = append(f.decls, d.pos)
		f.LabelSets = append(f.LabelSets, d.labels)
		if !slices.Contains(f.Files, rel) {
			f.Files = append(f.Files, rel)
			sort.Strings(f.Files)
		}
		if len(d.types) == 0 {
			c.problems = append(c.problems, fmt.Errorf("%s: %s is declared but never sent", d.pos, d.name))
		}
		for _, typ := range sortedKeys(d.types) {
			switch {
			case f.Type == "":
				f.Type = typ
			case f.Type != typ:
				c.problems = append(c.problems, fmt.Errorf("%s: %s is sent as %s and as %s", d.pos, d.name, f.Type, typ))
			}
		}
	}
	return c, nil
}

type listedPackage struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	Module     *struct{ Main bool }
	Error      *struct{ Err string }
}

// goList asks the go command for the production packages of the main module
// and for the export data of everything they import (built or taken from the
// build cache, as go vet does).
func goList(root string, patterns []string) (main []listedPackage, exports map[string]string, err error) {
	args := append([]string{"list", "-e", "-export", "-deps", "-json=ImportPath,Dir,Export,GoFiles,Module,Error"}, patterns...)
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, fmt.Errorf("go list: %w: %s", err, stderr.String())
	}
	exports = map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			return nil, nil, fmt.Errorf("go list output: %w", err)
		}
		if p.Error != nil {
			return nil, nil, fmt.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		exports[p.ImportPath] = p.Export
		if p.Module != nil && p.Module.Main {
			main = append(main, p)
		}
	}
	return main, exports, nil
}

// packageReader follows descriptors through one type-checked package.
type packageReader struct {
	root  string // positions are relative to it
	pkg   *types.Package
	fset  *token.FileSet
	info  *types.Info
	files []*ast.File
	errs  []error

	values    map[*types.Var][]valueRef        // what is assigned to a variable or field
	params    map[*types.Var]paramRef          // which function a parameter belongs to
	calls     map[types.Object][]*ast.CallExpr // calls by the callee's object
	returns   map[types.Object][][]ast.Expr    // return statements by function
	descs     map[*ast.CallExpr]*declaration   // NewDesc calls
	following map[ast.Node]bool                // cycle guard
}

// valueRef is an expression assigned to a variable: the whole value, or
// result `index` of a call returning several.
type valueRef struct {
	expr  ast.Expr
	index int
}

// paramRef places a parameter: the function's object (a *types.Func, or
// the variable a function literal is assigned to), its index, and whether
// it is the variadic one.
type paramRef struct {
	fn       types.Object
	index    int
	variadic bool
}

func newPackageReader(root string, fset *token.FileSet, imp types.Importer, p listedPackage) (*packageReader, error) {
	r := &packageReader{
		root: root,
		fset: fset,
		info: &types.Info{
			Types: map[ast.Expr]types.TypeAndValue{},
			Defs:  map[*ast.Ident]types.Object{},
			Uses:  map[*ast.Ident]types.Object{},
		},
		values:    map[*types.Var][]valueRef{},
		params:    map[*types.Var]paramRef{},
		calls:     map[types.Object][]*ast.CallExpr{},
		returns:   map[types.Object][][]ast.Expr{},
		descs:     map[*ast.CallExpr]*declaration{},
		following: map[ast.Node]bool{},
	}
	for _, name := range p.GoFiles {
		f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		r.files = append(r.files, f)
	}
	conf := types.Config{Importer: imp}
	pkg, err := conf.Check(p.ImportPath, fset, r.files, r.info)
	if err != nil {
		return nil, fmt.Errorf("type-checking %s: %w", p.ImportPath, err)
	}
	r.pkg = pkg
	r.index()
	return r, nil
}

// index records, for the whole package, what flows where.
func (r *packageReader) index() {
	for _, f := range r.files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.ValueSpec:
				r.assign(identExprs(n.Names), n.Values)
			case *ast.AssignStmt:
				r.assign(n.Lhs, n.Rhs)
			case *ast.RangeStmt:
				// The value of a range over a slice or map of descriptors
				// is one of its elements: follow the ranged expression.
				if n.Value != nil {
					if v := r.variable(n.Value); v != nil {
						r.values[v] = append(r.values[v], valueRef{expr: n.X, index: -1})
					}
				}
			case *ast.CompositeLit:
				r.structFields(n)
			case *ast.FuncDecl:
				fn := r.info.Defs[n.Name]
				r.paramsOf(fn, n.Type)
				r.returnsOf(fn, n.Body)
			case *ast.CallExpr:
				if fn := r.callee(n); fn != nil {
					r.calls[fn] = append(r.calls[fn], n)
				}
				if isFunc(r.callee(n), promPkg, "NewDesc") {
					r.descs[n] = r.newDesc(n)
				}
			}
			return true
		})
	}
}

func identExprs(ids []*ast.Ident) []ast.Expr {
	out := make([]ast.Expr, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// assign records lhs[i] = rhs[i], or lhs[i] = result i of a single call, and
// a function literal's parameters and returns under the variable it is
// assigned to.
func (r *packageReader) assign(lhs, rhs []ast.Expr) {
	for i, l := range lhs {
		v := r.variable(l)
		if v == nil {
			continue
		}
		switch {
		case len(rhs) == len(lhs):
			r.values[v] = append(r.values[v], valueRef{expr: rhs[i], index: -1})
			if lit, ok := ast.Unparen(rhs[i]).(*ast.FuncLit); ok {
				r.paramsOf(v, lit.Type)
				r.returnsOf(v, lit.Body)
			}
		case len(rhs) == 1:
			r.values[v] = append(r.values[v], valueRef{expr: rhs[0], index: i})
		}
	}
}

// variable is the variable (or struct field) an assignment target names.
func (r *packageReader) variable(e ast.Expr) *types.Var {
	switch e := ast.Unparen(e).(type) {
	case *ast.Ident:
		obj := r.info.Defs[e]
		if obj == nil {
			obj = r.info.Uses[e]
		}
		v, _ := obj.(*types.Var)
		return v
	case *ast.SelectorExpr:
		v, _ := r.info.Uses[e.Sel].(*types.Var)
		return v
	}
	return nil
}

// structFields records the fields a struct literal sets.
func (r *packageReader) structFields(lit *ast.CompositeLit) {
	tv, ok := r.info.Types[lit]
	if !ok {
		return
	}
	st, ok := tv.Type.Underlying().(*types.Struct)
	if !ok {
		return
	}
	for i, elt := range lit.Elts {
		if kv, ok := elt.(*ast.KeyValueExpr); ok {
			if id, ok := kv.Key.(*ast.Ident); ok {
				if v, ok := r.info.Uses[id].(*types.Var); ok {
					r.values[v] = append(r.values[v], valueRef{expr: kv.Value, index: -1})
				}
			}
			continue
		}
		if i < st.NumFields() {
			f := st.Field(i)
			r.values[f] = append(r.values[f], valueRef{expr: elt, index: -1})
		}
	}
}

func (r *packageReader) paramsOf(fn types.Object, ft *ast.FuncType) {
	if fn == nil || ft.Params == nil {
		return
	}
	i := 0
	for _, field := range ft.Params.List {
		_, variadic := field.Type.(*ast.Ellipsis)
		for _, name := range field.Names {
			if v, ok := r.info.Defs[name].(*types.Var); ok {
				r.params[v] = paramRef{fn: fn, index: i, variadic: variadic}
			}
			i++
		}
		if len(field.Names) == 0 {
			i++
		}
	}
}

// returnsOf records the return statements of a body, not those of the
// function literals inside it.
func (r *packageReader) returnsOf(fn types.Object, body *ast.BlockStmt) {
	if fn == nil || body == nil {
		return
	}
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.FuncLit:
			return false
		case *ast.ReturnStmt:
			r.returns[fn] = append(r.returns[fn], n.Results)
		}
		return true
	})
}

// callee is the object a call calls: a function, a method, or a variable
// holding a function literal.
func (r *packageReader) callee(call *ast.CallExpr) types.Object {
	switch fun := ast.Unparen(call.Fun).(type) {
	case *ast.Ident:
		return r.info.Uses[fun]
	case *ast.SelectorExpr:
		return r.info.Uses[fun.Sel]
	case *ast.IndexExpr: // a generic function instantiated explicitly
		if id, ok := fun.X.(*ast.Ident); ok {
			return r.info.Uses[id]
		}
	}
	return nil
}

func isFunc(obj types.Object, pkg string, names ...string) bool {
	fn, ok := obj.(*types.Func)
	return ok && fn.Pkg() != nil && fn.Pkg().Path() == pkg && slices.Contains(names, fn.Name())
}

// position is where n is, relative to the module's root.
func (r *packageReader) position(n ast.Node) token.Position {
	pos := r.fset.Position(n.Pos())
	if rel, err := filepath.Rel(r.root, pos.Filename); err == nil {
		pos.Filename = rel
	}
	return pos
}

func (r *packageReader) errorf(n ast.Node, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", r.position(n), fmt.Sprintf(format, args...)))
}

// newDesc reads prometheus.NewDesc(fqName, help, variableLabels, constLabels).
func (r *packageReader) newDesc(call *ast.CallExpr) *declaration {
	d := &declaration{pos: r.position(call), types: map[string]bool{}}
	if len(call.Args) != 4 {
		r.errorf(call, "NewDesc with %d arguments", len(call.Args))
		return d
	}
	d.name = r.stringValue(call.Args[0])
	d.labels = append(r.stringsValue(call.Args[2]), r.mapKeys(call.Args[3])...)
	return d
}

// declarations returns every family declaration of the package, with the
// types its descriptors are sent as.
func (r *packageReader) declarations() []*declaration {
	var out []*declaration
	for _, f := range r.files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			if d := r.metricConstructor(call); d != nil {
				out = append(out, d)
			}
			if d := r.versionCollector(call); d != nil {
				out = append(out, d)
			}
			r.sends(call)
			return true
		})
	}
	for _, d := range r.descs {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].pos.String() < out[j].pos.String() })
	return out
}

// The metric constructors of client_golang, by the type they make.
var constructorTypes = map[string]string{
	"NewCounter": "counter", "NewCounterVec": "counter", "NewCounterFunc": "counter",
	"NewGauge": "gauge", "NewGaugeVec": "gauge", "NewGaugeFunc": "gauge",
	"NewHistogram": "histogram", "NewHistogramVec": "histogram",
	"NewSummary": "summary", "NewSummaryVec": "summary",
	"NewUntypedFunc": "untyped",
}

// metricConstructor reads prometheus.NewCounterVec(prometheus.CounterOpts{
// Name: ...}, labels) and its kin, also through promauto.
func (r *packageReader) metricConstructor(call *ast.CallExpr) *declaration {
	fn, ok := r.callee(call).(*types.Func)
	if !ok || fn.Pkg() == nil || (fn.Pkg().Path() != promPkg && fn.Pkg().Path() != promautoPkg) {
		return nil
	}
	typ, ok := constructorTypes[fn.Name()]
	if !ok || len(call.Args) == 0 {
		return nil
	}
	d := &declaration{pos: r.position(call), types: map[string]bool{typ: true}}
	opts := r.compositeLit(call.Args[0])
	if opts == nil {
		r.errorf(call, "%s options are not a literal this reader can follow", fn.Name())
		return d
	}
	var namespace, subsystem, name string
	for _, elt := range opts.Elts {
		kv, ok := elt.(*ast.KeyValueExpr)
		if !ok {
			r.errorf(elt, "metric options without field names")
			continue
		}
		switch key := kv.Key.(*ast.Ident).Name; key {
		case "Namespace":
			namespace = r.stringValue(kv.Value)
		case "Subsystem":
			subsystem = r.stringValue(kv.Value)
		case "Name":
			name = r.stringValue(kv.Value)
		case "ConstLabels":
			d.labels = append(d.labels, r.mapKeys(kv.Value)...)
		}
	}
	d.name = prometheus.BuildFQName(namespace, subsystem, name)
	if strings.HasSuffix(fn.Name(), "Vec") && len(call.Args) > 1 {
		d.labels = append(d.labels, r.stringsValue(call.Args[1])...)
	}
	return d
}

// versionCollector reads versioncollector.NewCollector(program): its family
// and labels are the library's, so they are taken from the collector itself.
func (r *packageReader) versionCollector(call *ast.CallExpr) *declaration {
	if !isFunc(r.callee(call), versionPkg, "NewCollector") || len(call.Args) != 1 {
		return nil
	}
	program := r.stringValue(call.Args[0])
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(versioncollector.NewCollector(program))
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 {
		r.errorf(call, "version collector %q: %d families, %v", program, len(mfs), err)
		return nil
	}
	mf := mfs[0]
	d := &declaration{name: mf.GetName(), pos: r.position(call),
		types: map[string]bool{strings.ToLower(mf.GetType().String()): true}}
	for _, l := range mf.GetMetric()[0].GetLabel() {
		d.labels = append(d.labels, l.GetName())
	}
	return d
}

// The value types of client_golang's constants.
var valueTypes = map[int64]string{
	int64(prometheus.CounterValue): "counter",
	int64(prometheus.GaugeValue):   "gauge",
	int64(prometheus.UntypedValue): "untyped",
}

// sends records the type of every descriptor a call sends: a *Desc argument
// followed by a constant prometheus.ValueType (newConstMetric,
// prometheus.MustNewConstMetric, ...), or the first argument of the const
// histogram and summary constructors. A ValueType that is not a constant
// belongs to a wrapper (newConstMetric itself); its callers are the sends.
func (r *packageReader) sends(call *ast.CallExpr) {
	fixed := ""
	switch fn := r.callee(call); {
	case isFunc(fn, promPkg, "NewConstHistogram", "MustNewConstHistogram", "NewConstHistogramWithCreatedTimestamp", "MustNewConstHistogramWithCreatedTimestamp"):
		fixed = "histogram"
	case isFunc(fn, promPkg, "NewConstSummary", "MustNewConstSummary", "NewConstSummaryWithCreatedTimestamp", "MustNewConstSummaryWithCreatedTimestamp"):
		fixed = "summary"
	}
	for i, arg := range call.Args {
		if !r.isDesc(arg) {
			continue
		}
		typ := fixed
		if typ == "" && i+1 < len(call.Args) {
			tv := r.info.Types[call.Args[i+1]]
			if named, ok := tv.Type.(*types.Named); ok && named.Obj().Pkg() != nil &&
				named.Obj().Pkg().Path() == promPkg && named.Obj().Name() == "ValueType" && tv.Value != nil {
				v, _ := constant.Int64Val(tv.Value)
				typ = valueTypes[v]
			}
		}
		if typ == "" {
			continue
		}
		for _, d := range r.origins(arg) {
			d.types[typ] = true
		}
	}
}

func (r *packageReader) isDesc(e ast.Expr) bool {
	ptr, ok := r.info.Types[e].Type.(*types.Pointer)
	if !ok {
		return false
	}
	named, ok := ptr.Elem().(*types.Named)
	return ok && named.Obj().Pkg() != nil && named.Obj().Pkg().Path() == promPkg && named.Obj().Name() == "Desc"
}

// origins are the NewDesc calls whose descriptor an expression can hold.
func (r *packageReader) origins(e ast.Expr) []*declaration {
	return r.originsAt(e, -1)
}

// originsAt follows result `index` of e when e is a call returning several
// values (-1: e's only value). A slice, array or map of descriptors holds
// the origins of all its elements.
func (r *packageReader) originsAt(e ast.Expr, index int) []*declaration {
	e = ast.Unparen(e)
	if r.following[e] {
		return nil
	}
	r.following[e] = true
	defer delete(r.following, e)

	switch e := e.(type) {
	case *ast.CallExpr:
		if d, ok := r.descs[e]; ok {
			return []*declaration{d}
		}
		fn := r.callee(e)
		rets, ok := r.returns[fn]
		if !ok {
			r.errorf(e, "a descriptor returned by %s, which this reader cannot follow", types.ExprString(e.Fun))
			return nil
		}
		if index < 0 {
			index = 0
		}
		var out []*declaration
		for _, results := range rets {
			switch {
			case index < len(results) && len(results) > 1:
				out = append(out, r.origins(results[index])...)
			case len(results) == 1:
				out = append(out, r.originsAt(results[0], index)...)
			}
		}
		return out
	case *ast.Ident, *ast.SelectorExpr:
		v := r.variable(e)
		if v == nil {
			r.errorf(e, "descriptor %s is not a variable this reader can follow", types.ExprString(e))
			return nil
		}
		return r.variableOrigins(e, v)
	case *ast.IndexExpr:
		return r.origins(e.X)
	case *ast.CompositeLit:
		var out []*declaration
		for _, elt := range e.Elts {
			if kv, ok := elt.(*ast.KeyValueExpr); ok {
				elt = kv.Value
			}
			if r.isDesc(elt) || isContainer(r.info.Types[elt].Type) {
				out = append(out, r.origins(elt)...)
			}
		}
		return out
	}
	r.errorf(e, "descriptor %s is an expression this reader cannot follow", types.ExprString(e))
	return nil
}

func (r *packageReader) variableOrigins(at ast.Expr, v *types.Var) []*declaration {
	var out []*declaration
	for _, ref := range r.values[v] {
		out = append(out, r.originsAt(ref.expr, ref.index)...)
	}
	if p, ok := r.params[v]; ok {
		for _, call := range r.calls[p.fn] {
			switch {
			case p.variadic && call.Ellipsis.IsValid():
				out = append(out, r.origins(call.Args[p.index])...)
			case p.variadic:
				for _, a := range call.Args[min(p.index, len(call.Args)):] {
					out = append(out, r.origins(a)...)
				}
			case p.index < len(call.Args):
				out = append(out, r.origins(call.Args[p.index])...)
			}
		}
	}
	if len(out) == 0 && len(r.values[v]) == 0 {
		if _, isParam := r.params[v]; !isParam {
			r.errorf(at, "descriptor %s: no assignment found", v.Name())
		}
	}
	return out
}

func isContainer(t types.Type) bool {
	if t == nil {
		return false
	}
	switch t.Underlying().(type) {
	case *types.Slice, *types.Array, *types.Map:
		return true
	}
	return false
}

// stringValue is a constant string, or prometheus.BuildFQName of constants.
func (r *packageReader) stringValue(e ast.Expr) string {
	if tv := r.info.Types[e]; tv.Value != nil && tv.Value.Kind() == constant.String {
		return constant.StringVal(tv.Value)
	}
	if call, ok := ast.Unparen(e).(*ast.CallExpr); ok && isFunc(r.callee(call), promPkg, "BuildFQName") && len(call.Args) == 3 {
		return prometheus.BuildFQName(r.stringValue(call.Args[0]), r.stringValue(call.Args[1]), r.stringValue(call.Args[2]))
	}
	r.errorf(e, "%s is not a constant string", types.ExprString(e))
	return ""
}

// stringsValue is a []string literal of constants, a variable holding one,
// a slices.Clone or append of those, or nil.
func (r *packageReader) stringsValue(e ast.Expr) []string {
	e = ast.Unparen(e)
	if tv := r.info.Types[e]; tv.IsNil() {
		return nil
	}
	switch e := e.(type) {
	case *ast.CompositeLit:
		out := make([]string, 0, len(e.Elts))
		for _, elt := range e.Elts {
			out = append(out, r.stringValue(elt))
		}
		return out
	case *ast.Ident:
		if v := r.variable(e); v != nil && len(r.values[v]) == 1 {
			return r.stringsValue(r.values[v][0].expr)
		}
	case *ast.CallExpr:
		if isFunc(r.callee(e), "slices", "Clone") && len(e.Args) == 1 {
			return r.stringsValue(e.Args[0])
		}
		if id, ok := ast.Unparen(e.Fun).(*ast.Ident); ok && id.Name == "append" && len(e.Args) > 0 {
			out := r.stringsValue(e.Args[0])
			if e.Ellipsis.IsValid() {
				return append(out, r.stringsValue(e.Args[1])...)
			}
			for _, a := range e.Args[1:] {
				out = append(out, r.stringValue(a))
			}
			return out
		}
	}
	r.errorf(e, "label names %s are not a literal this reader can follow", types.ExprString(e))
	return nil
}

// mapKeys are the keys of a prometheus.Labels literal (constant labels).
func (r *packageReader) mapKeys(e ast.Expr) []string {
	if tv := r.info.Types[e]; tv.IsNil() {
		return nil
	}
	lit := r.compositeLit(e)
	if lit == nil {
		r.errorf(e, "constant labels %s are not a literal this reader can follow", types.ExprString(e))
		return nil
	}
	var out []string
	for _, elt := range lit.Elts {
		if kv, ok := elt.(*ast.KeyValueExpr); ok {
			out = append(out, r.stringValue(kv.Key))
		}
	}
	return out
}

// compositeLit is a literal, its address, or the one literal a variable is
// set to.
func (r *packageReader) compositeLit(e ast.Expr) *ast.CompositeLit {
	switch e := ast.Unparen(e).(type) {
	case *ast.CompositeLit:
		return e
	case *ast.UnaryExpr:
		if e.Op == token.AND {
			return r.compositeLit(e.X)
		}
	case *ast.Ident:
		if v := r.variable(e); v != nil && len(r.values[v]) == 1 {
			return r.compositeLit(r.values[v][0].expr)
		}
	}
	return nil
}

// resolve finds a reference of the form package.Name or
// package.Type.Member (a method or field) in the production packages.
func (c *code) resolve(ref string) error {
	parts := strings.Split(ref, ".")
	if len(parts) < 2 || len(parts) > 3 {
		return errors.New("not of the form package.Name or package.Type.Member")
	}
	pkg, ok := c.packages[parts[0]]
	if !ok {
		return fmt.Errorf("no production package is named %s", parts[0])
	}
	obj := pkg.Scope().Lookup(parts[1])
	if obj == nil {
		return fmt.Errorf("package %s has no %s", pkg.Path(), parts[1])
	}
	if len(parts) == 3 {
		if m, _, _ := types.LookupFieldOrMethod(obj.Type(), true, pkg, parts[2]); m == nil {
			return fmt.Errorf("%s.%s has no field or method %s", parts[0], parts[1], parts[2])
		}
	}
	return nil
}
