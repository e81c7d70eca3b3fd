/*
 * A small stand-in for bootstrap-table, for Great Expectations' Data Docs served offline by the
 * API (serving/api/data_docs.py): no maintained Python package ships bootstrap-table, and GE's
 * index page builds its lists with it. Supported: `columns` + `data` rendered as a Bootstrap
 * table (cells are GE's own HTML), `sortName`/`sortOrder` and sortable headers (a column's
 * `sortName` names the field it sorts by), `search` (a box in the `toolbar`), `rowStyle` and
 * `rowAttributes` (functions or their global names) and the `click-row.bs.table` event.
 * Methods: 'resetSearch' clears the box; others (e.g. 'clearFilterControl') do nothing.
 * Not supported: pagination (every row is shown) and filter controls.
 */
(function ($) {
  "use strict";

  function named(fn) {
    return typeof fn === "function" ? fn : (typeof fn === "string" ? window[fn] : null);
  }

  function isOn(value) {
    return value === true || value === "true";
  }

  function sortValue(row, column) {
    var value = row[column.sortName || column.field];
    return value === undefined || value === null ? "" : value;
  }

  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") {
      return a - b;
    }
    return String(a).localeCompare(String(b), undefined, {numeric: true});
  }

  function cellText(value) {
    return $("<div>").html(value === undefined || value === null ? "" : String(value)).text();
  }

  function Table($table, options) {
    this.$table = $table;
    this.options = options;
    this.columns = options.columns || [];
    this.sortColumn = null;
    this.sortOrder = options.sortOrder === "desc" ? "desc" : "asc";
    this.search = "";
    var self = this;
    if (options.sortName) {
      this.sortColumn = this.columns.filter(function (c) {
        return c.field === options.sortName;
      })[0] || {field: options.sortName};
    }
    $table.addClass("table table-hover").empty();
    var $row = $("<tr>");
    this.columns.forEach(function (column) {
      var $th = $("<th>").html(column.title || "").css("text-align", column.align || "");
      if (isOn(column.sortable)) {
        $th.css("cursor", "pointer").on("click", function () {
          self.sortBy(column);
        });
      }
      column.$th = $th;
      $row.append($th);
    });
    $table.append($("<thead>").append($row), $("<tbody>"));
    if (isOn(options.search)) {
      var $box = $('<input type="search" class="form-control form-control-sm d-inline-block ' +
                   'w-auto ml-1" placeholder="Search">');
      $box.on("input", function () {
        self.search = $box.val().toLowerCase();
        self.render();
      });
      this.$search = $box;
      $(options.toolbar || []).append($box);
    }
    this.render();
  }

  Table.prototype.sortBy = function (column) {
    if (this.sortColumn === column) {
      this.sortOrder = this.sortOrder === "asc" ? "desc" : "asc";
    } else {
      this.sortColumn = column;
      this.sortOrder = "asc";
    }
    this.render();
  };

  Table.prototype.resetSearch = function () {
    this.search = "";
    if (this.$search) {
      this.$search.val("");
    }
    this.render();
  };

  Table.prototype.render = function () {
    var self = this;
    var rows = (this.options.data || []).slice();
    if (this.search) {
      rows = rows.filter(function (row) {
        return self.columns.some(function (column) {
          return cellText(row[column.field]).toLowerCase().indexOf(self.search) >= 0;
        });
      });
    }
    if (this.sortColumn) {
      var column = this.sortColumn;
      var sign = this.sortOrder === "desc" ? -1 : 1;
      rows.sort(function (a, b) {
        return sign * compare(sortValue(a, column), sortValue(b, column));
      });
    }
    this.columns.forEach(function (c) {
      if (c.$th) {
        c.$th.attr("aria-sort", c === self.sortColumn ?
          (self.sortOrder === "asc" ? "ascending" : "descending") : null);
      }
    });
    var rowStyle = named(this.options.rowStyle);
    var rowAttributes = named(this.options.rowAttributes);
    var $tbody = this.$table.children("tbody").empty();
    rows.forEach(function (row, index) {
      var $tr = $("<tr>");
      if (rowStyle) {
        var style = rowStyle(row, index) || {};
        $tr.css(style.css || {}).addClass(style.classes || "");
      }
      if (rowAttributes) {
        $tr.attr(rowAttributes(row, index) || {});
      }
      self.columns.forEach(function (column) {
        var value = row[column.field];
        $tr.append($("<td>").html(value === undefined || value === null ? "" : String(value))
          .css("text-align", column.align || ""));
      });
      $tr.on("click", function (event) {
        if (!$(event.target).closest("a").length) {
          self.$table.trigger("click-row.bs.table", [row, $tr]);
        }
      });
      $tbody.append($tr);
    });
  };

  $.fn.bootstrapTable = function (options) {
    return this.each(function () {
      var $table = $(this);
      if (typeof options === "string") {
        var table = $table.data("bootstrap-table-lite");
        if (table && options === "resetSearch") {
          table.resetSearch();
        }
        return;
      }
      $table.data("bootstrap-table-lite", new Table($table, options || {}));
    });
  };
})(jQuery);
